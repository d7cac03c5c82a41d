//! A blocking HTTP client for the service's routes.

use crate::json_lines;

/// One HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Answer {
    /// The body as JSON (panics with the body otherwise).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    /// An NDJSON body, one value per line.
    pub fn lines(&self) -> Vec<serde_json::Value> {
        json_lines(self.body.as_bytes())
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

/// A small blocking client of the HTTP API.
pub struct Http {
    pub base: String,
    client: reqwest::blocking::Client,
}

impl Http {
    pub fn new(base: &str) -> Http {
        Http {
            base: base.trim_end_matches('/').to_string(),
            client: reqwest::blocking::Client::builder()
                .timeout(std::time::Duration::from_secs(120))
                .build()
                .expect("client"),
        }
    }

    fn send(&self, request: reqwest::blocking::RequestBuilder) -> Answer {
        let response = request.send().expect("request");
        Answer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().expect("body"),
        }
    }

    pub fn get(&self, path: &str) -> Answer {
        self.send(self.client.get(format!("{}{path}", self.base)))
    }

    /// POST with optional bearer token and body.
    pub fn post(&self, path: &str, token: Option<&str>, body: &str) -> Answer {
        let mut r = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-ndjson")
            .body(body.to_string());
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        self.send(r)
    }

    /// `POST /v1/records` of NDJSON text.
    pub fn records(&self, ndjson: &str) -> Answer {
        self.post("/v1/records", None, ndjson)
    }

    /// `POST /v1/records` with a body sent in chunks, without a `content-length`.
    pub fn records_chunked(&self, ndjson: &str) -> Answer {
        let reader = std::io::Cursor::new(ndjson.as_bytes().to_vec());
        self.send(
            self.client
                .post(format!("{}/v1/records", self.base))
                .header("content-type", "application/x-ndjson")
                .body(reqwest::blocking::Body::new(reader)),
        )
    }

    /// A raw request (any method, headers and body).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut r = self
            .client
            .request(method, format!("{}{path}", self.base))
            .body(body);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        self.send(r)
    }
}

impl Http {
    /// The version `GET /v1/models` says is current for `model` (empty when none).
    pub fn current_version(&self, model: &str) -> String {
        self.get("/v1/models").json()["models"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["model"] == model)
            .and_then(|m| m["plugin_version"].as_str())
            .unwrap_or_default()
            .to_string()
    }
}
