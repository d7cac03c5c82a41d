//! Projection claims: projection of one model is shared by every worker of every host. A
//! worker claims a batch of the model's dirty references (one statement, skipping the rows
//! other workers hold or are claiming), renews its claims while it works, and its commit
//! writes a reference's view only while the claim still holds, then lets the claims go.
//!
//! So a reference is never projected by two workers at once, and a view is never written
//! over a fresher one: a worker whose claim lapsed (a stalled host) finds at commit that
//! another took the reference, and writes nothing for it. The claims of a host that died
//! lapse within the lease length (`claimed_until`); a restarted process on the same machine
//! takes over a dead predecessor's claims at once.

use crate::sql::{Backend, Column, Sql, Tx};
use crate::{CommitError, Lease, StoreError, now_micros};
use sqlx::{ColumnIndex, Executor, IntoArguments};
use std::collections::HashSet;

impl<DB> Sql<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    String: Column<DB>,
    Option<String>: Column<DB>,
    i64: Column<DB>,
{
    /// Claims up to `limit` of the model's dirty references for `claim.holder`, oldest marks
    /// first: those nobody holds, whose claim lapsed, or that this holder claimed before (a
    /// batch it gave up). One statement in one short transaction. Returns (reference,
    /// stamp) in mark order.
    pub(crate) async fn claim_marks(
        &self,
        claim: &Lease,
        limit: usize,
        ttl_micros: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let op = "claim dirty references";
        let model = claim.model.as_str();
        let now = now_micros();
        let mut qb = Self::query("UPDATE dirty SET claimed_by = ");
        qb.push_bind(claim.holder.clone())
            .push(", claimed_micros = ")
            .push_bind(now)
            .push(", claimed_until = ")
            .push_bind(now + ttl_micros)
            .push(" WHERE reference IN (SELECT reference FROM dirty WHERE model = ")
            .push_bind(model.to_string())
            .push(" AND error IS NULL AND (claimed_by IS NULL OR claimed_until < ")
            .push_bind(now)
            .push(" OR claimed_by = ")
            .push_bind(claim.holder.clone())
            .push(") ORDER BY stamp, reference LIMIT ")
            .push_bind(limit.min(DB::IN_LIST_MAX) as i64)
            // PostgreSQL: rows another worker is claiming right now are passed over, not
            // waited for. SQLite runs one write transaction at a time anyway.
            .push(DB::LOCK_SKIP)
            .push(") RETURNING reference, stamp");
        let mut tx = self.begin(op, model).await?;
        let mut marks: Vec<(String, i64)> = self.fetch_as(&mut *tx, qb.build(), op, model).await?;
        self.commit(tx, op, model).await?;
        marks.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        Ok(marks)
    }

    /// Extends this holder's claims on a model by `ttl_micros` (the heartbeat of a slow
    /// batch). Returns how many it still holds.
    pub async fn renew_claims(&self, claim: &Lease, ttl_micros: i64) -> Result<u64, StoreError> {
        // Rows are locked in reference order, as every writer of marks locks them, so that
        // two transactions never wait for each other in a circle.
        let mut qb = Self::query("UPDATE dirty SET claimed_until = ");
        qb.push_bind(now_micros() + ttl_micros)
            .push(" WHERE reference IN (SELECT reference FROM dirty WHERE model = ")
            .push_bind(claim.model.clone())
            .push(" AND claimed_by = ")
            .push_bind(claim.holder.clone())
            .push(" ORDER BY reference")
            .push(DB::LOCK_EXCLUSIVE)
            .push(")");
        self.execute(&self.writer, qb.build(), "renew claims", &claim.model)
            .await
    }

    /// Lets go of every claim of these holders (a process that stops, or one found dead).
    pub async fn release_claims(&self, holders: &[String]) -> Result<u64, StoreError> {
        if holders.is_empty() {
            return Ok(0);
        }
        let mut qb = Self::query(
            "UPDATE dirty SET claimed_by = NULL, claimed_micros = NULL, claimed_until = NULL \
             WHERE reference IN (SELECT reference FROM dirty WHERE ",
        );
        DB::push_in_strings(&mut qb, "claimed_by", holders);
        qb.push(" ORDER BY reference")
            .push(DB::LOCK_EXCLUSIVE)
            .push(")");
        self.execute(&self.writer, qb.build(), "release claims", "*")
            .await
    }

    /// Inside a projection commit: checks that the batch's plugin version is still the
    /// model's current one (holding the model's row until the commit ends, so a version made
    /// current meanwhile waits for it), and returns which of `references` this holder still
    /// claims (locking those marks until the commit ends).
    pub(crate) async fn check_claims(
        &self,
        tx: &mut Tx<DB>,
        claim: &Lease,
        version: Option<&str>,
        references: &[String],
    ) -> Result<HashSet<String>, CommitError> {
        let op = "check claims";
        let model = claim.model.as_str();
        if let Some(version) = version {
            let mut qb = Self::query("SELECT plugin_version FROM models WHERE name = ");
            qb.push_bind(model.to_string()).push(DB::LOCK_SHARED);
            let current: Vec<(String,)> = self.fetch_as(&mut **tx, qb.build(), op, model).await?;
            if let Some((current,)) = current.into_iter().next()
                && current != version
            {
                return Err(CommitError::VersionChanged {
                    model: model.to_string(),
                    current,
                });
            }
        }
        let mut held = HashSet::new();
        for chunk in references.chunks(DB::IN_LIST_MAX) {
            let mut qb = Self::query("SELECT reference FROM dirty WHERE model = ");
            qb.push_bind(model.to_string())
                .push(" AND claimed_by = ")
                .push_bind(claim.holder.clone())
                .push(" AND ");
            DB::push_in_strings(&mut qb, "reference", chunk);
            qb.push(" ORDER BY reference").push(DB::LOCK_EXCLUSIVE);
            let rows: Vec<(String,)> = self.fetch_as(&mut **tx, qb.build(), op, model).await?;
            held.extend(rows.into_iter().map(|(r,)| r));
        }
        Ok(held)
    }

    /// Inside a projection commit, last: lets go of this holder's claims on `references`
    /// (the marks it cleared are gone already; what is left was marked again meanwhile, or
    /// failed, and is free for the next batch at once).
    pub(crate) async fn let_go(
        &self,
        tx: &mut Tx<DB>,
        claim: &Lease,
        references: &[String],
    ) -> Result<(), StoreError> {
        for chunk in references.chunks(DB::IN_LIST_MAX) {
            let mut qb = Self::query(
                "UPDATE dirty SET claimed_by = NULL, claimed_micros = NULL, \
                 claimed_until = NULL WHERE claimed_by = ",
            );
            qb.push_bind(claim.holder.clone()).push(" AND ");
            DB::push_in_strings(&mut qb, "reference", chunk);
            self.execute(&mut **tx, qb.build(), "let claims go", &claim.model)
                .await?;
        }
        Ok(())
    }
}

/// What of a projection batch a commit writes: only the references its holder still claims.
/// Borrows the batch as it is when every claim held (the usual case).
pub(crate) struct Held<'a> {
    pub views: std::borrow::Cow<'a, [crate::ViewRow]>,
    pub seen: std::borrow::Cow<'a, [(String, i64)]>,
    pub failed: std::borrow::Cow<'a, [crate::ProjectFailure]>,
}

impl<'a> Held<'a> {
    pub(crate) fn keep(
        held: &HashSet<String>,
        views: &'a [crate::ViewRow],
        seen: &'a [(String, i64)],
        failed: &'a [crate::ProjectFailure],
    ) -> Self {
        use std::borrow::Cow;
        if seen.len() + failed.len() == held.len()
            && views.iter().all(|v| held.contains(&v.reference))
        {
            return Self {
                views: Cow::Borrowed(views),
                seen: Cow::Borrowed(seen),
                failed: Cow::Borrowed(failed),
            };
        }
        Self {
            views: views
                .iter()
                .filter(|v| held.contains(&v.reference))
                .cloned()
                .collect(),
            seen: seen
                .iter()
                .filter(|(r, _)| held.contains(r))
                .cloned()
                .collect(),
            failed: failed
                .iter()
                .filter(|f| held.contains(&f.reference))
                .cloned()
                .collect(),
        }
    }
}

/// The references a projection commit covers: its cleared marks and its failures.
pub(crate) fn covered(seen: &[(String, i64)], failed: &[crate::ProjectFailure]) -> Vec<String> {
    seen.iter()
        .map(|(r, _)| r.clone())
        .chain(failed.iter().map(|f| f.reference.clone()))
        .collect()
}
