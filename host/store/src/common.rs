//! The store methods whose SQL is the same on both backends, written once. `QueryBuilder`
//! writes each backend's placeholders (`?` or `$n`), so the macro below expands the same code
//! for `SqliteStore` over `Sqlite` and for `PgStore` over `Postgres`.

/// Implements the shared methods for a backend: `impl_shared!(SqliteStore, Sqlite)`.
macro_rules! impl_shared {
    ($store:ident, $db:ident) => {
        impl $store {
            fn query(sql: &str) -> sqlx::QueryBuilder<$db> {
                sqlx::QueryBuilder::<$db>::new(sql)
            }

            /// Runs a built query on the pool, counting it; returns its rows.
            async fn fetch(
                &self,
                qb: &mut sqlx::QueryBuilder<$db>,
                operation: &'static str,
                model: &str,
            ) -> Result<Vec<<$db as sqlx::Database>::Row>, StoreError> {
                self.stats.add(1);
                qb.build()
                    .fetch_all(&self.pool)
                    .await
                    .map_err(query_error(operation, model))
            }

            /// Executes a built statement inside a transaction, counting it; returns the
            /// rows it affected.
            async fn exec(
                &self,
                qb: &mut sqlx::QueryBuilder<$db>,
                tx: &mut sqlx::Transaction<'static, $db>,
                operation: &'static str,
                model: &str,
            ) -> Result<u64, StoreError> {
                self.stats.add(1);
                Ok(qb
                    .build()
                    .execute(&mut **tx)
                    .await
                    .map_err(query_error(operation, model))?
                    .rows_affected())
            }

            pub async fn models(&self) -> Result<Vec<ModelInfo>, StoreError> {
                self.stats.add(1);
                let rows: Vec<(String, String, String)> =
                    sqlx::query_as("SELECT name, kind, plugin_version FROM models ORDER BY name")
                        .fetch_all(&self.pool)
                        .await
                        .map_err(query_error("list models", "*"))?;
                Ok(rows
                    .into_iter()
                    .map(|(name, kind, plugin_version)| ModelInfo {
                        name,
                        kind,
                        plugin_version,
                    })
                    .collect())
            }

            pub async fn acquire_lease(&self, lease: &Lease, ttl_micros: i64) -> Result<bool, StoreError> {
                let now = now_micros();
                let mut qb = Self::query("INSERT INTO leases (stage, model, holder, expires_micros) VALUES (");
                qb.push_bind(lease.stage.as_str())
                    .push(", ")
                    .push_bind(lease.model.clone())
                    .push(", ")
                    .push_bind(lease.holder.clone())
                    .push(", ")
                    .push_bind(now + ttl_micros)
                    .push(
                        ") ON CONFLICT (stage, model) DO UPDATE SET holder = excluded.holder, \
                         expires_micros = excluded.expires_micros \
                         WHERE leases.holder = excluded.holder OR leases.expires_micros < ",
                    )
                    .push_bind(now);
                Ok(self.execute(&mut qb, "acquire lease", &lease.model).await? == 1)
            }

            pub async fn lease_holder(&self, stage: Stage, model: &str) -> Result<Option<String>, StoreError> {
                let mut qb = Self::query("SELECT holder FROM leases WHERE stage = ");
                qb.push_bind(stage.as_str()).push(" AND model = ").push_bind(model.to_string());
                self.stats.add(1);
                qb.build_query_scalar()
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(query_error("read lease", model))
            }

            pub async fn take_over_lease(&self, lease: &Lease, from: &str, ttl_micros: i64) -> Result<bool, StoreError> {
                let mut qb = Self::query("UPDATE leases SET holder = ");
                qb.push_bind(lease.holder.clone())
                    .push(", expires_micros = ")
                    .push_bind(now_micros() + ttl_micros);
                Self::push_lease(&mut qb, lease.stage, &lease.model, from);
                Ok(self.execute(&mut qb, "take over lease", &lease.model).await? == 1)
            }

            pub async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
                let mut qb = Self::query("DELETE FROM leases");
                Self::push_lease(&mut qb, lease.stage, &lease.model, &lease.holder);
                self.execute(&mut qb, "release lease", &lease.model).await?;
                Ok(())
            }

            fn push_lease(qb: &mut sqlx::QueryBuilder<$db>, stage: Stage, model: &str, holder: &str) {
                qb.push(" WHERE stage = ")
                    .push_bind(stage.as_str())
                    .push(" AND model = ")
                    .push_bind(model.to_string())
                    .push(" AND holder = ")
                    .push_bind(holder.to_string());
            }

            /// Inside a commit: the lease must still be ours (and is kept from expiring), and
            /// the batch's plugin version, when given, must still be the model's current one.
            /// Both are checked by one statement; telling the two failures apart costs a
            /// second one only when the check fails.
            async fn check_lease(
                &self,
                tx: &mut sqlx::Transaction<'static, $db>,
                lease: &Lease,
                version: Option<&str>,
            ) -> Result<(), CommitError> {
                let now = now_micros();
                let mut qb = Self::query("UPDATE leases SET expires_micros = CASE WHEN expires_micros < ");
                qb.push_bind(now).push(" THEN ").push_bind(now).push(" ELSE expires_micros END");
                Self::push_lease(&mut qb, lease.stage, &lease.model, &lease.holder);
                if let Some(version) = version {
                    qb.push(" AND NOT EXISTS (SELECT 1 FROM models WHERE name = ")
                        .push_bind(lease.model.clone())
                        .push(" AND plugin_version <> ")
                        .push_bind(version.to_string())
                        .push(")");
                }
                self.stats.add(1);
                let done = qb
                    .build()
                    .execute(&mut **tx)
                    .await
                    .map_err(query_error("check lease", &lease.model))?;
                if done.rows_affected() == 1 {
                    return Ok(());
                }
                if version.is_some() {
                    let mut qb = Self::query("SELECT plugin_version FROM models WHERE name = ");
                    qb.push_bind(lease.model.clone());
                    self.stats.add(1);
                    let current: Option<String> = qb
                        .build_query_scalar()
                        .fetch_optional(&mut **tx)
                        .await
                        .map_err(query_error("check plugin version", &lease.model))?;
                    if let Some(current) = current
                        && Some(current.as_str()) != version
                    {
                        return Err(CommitError::VersionChanged {
                            model: lease.model.clone(),
                            current,
                        });
                    }
                }
                Err(CommitError::LeaseLost {
                    stage: lease.stage.as_str(),
                    model: lease.model.clone(),
                })
            }

            pub async fn pending(&self, model: &str, limit: usize) -> Result<Vec<Pending>, StoreError> {
                let mut qb = Self::query(&format!(
                    "SELECT q.pos, q.attempts, q.first_parked_micros, {RECORD_COLUMNS} \
                     FROM queue q JOIN intake i ON i.seq = q.seq WHERE q.model = "
                ));
                qb.push_bind(model.to_string())
                    .push(" ORDER BY q.pos LIMIT ")
                    .push_bind(limit as i64);
                let rows = self.fetch(&mut qb, "read pending", model).await?;
                rows.iter()
                    .map(|r| {
                        Ok(Pending {
                            pos: r.try_get("pos")?,
                            attempts: r.try_get("attempts")?,
                            first_parked_micros: r.try_get("first_parked_micros")?,
                            record: rows::record(r)?,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(query_error("read pending", model))
            }

            pub async fn views(&self, model: &str, after: Option<&Cursor>, limit: usize) -> Result<Vec<ViewRow>, StoreError> {
                let op = "read views";
                let (seq, reference) = after
                    .map(|c| (c.first_seq, c.reference.clone()))
                    .unwrap_or((i64::MIN, String::new()));
                let mut qb = Self::query(
                    "SELECT reference, model, first_seq, canonical, root, lineage, parents, \
                     plugin_version FROM views WHERE model = ",
                );
                qb.push_bind(model.to_string())
                    .push(" AND (first_seq, reference) > (")
                    .push_bind(seq)
                    .push(", ")
                    .push_bind(reference)
                    .push(") ORDER BY first_seq, reference LIMIT ")
                    .push_bind(limit as i64);
                let rows = self.fetch(&mut qb, op, model).await?;
                rows.iter()
                    .map(rows::view_row)
                    .collect::<Result<_, _>>()
                    .map_err(query_error(op, model))
            }

            pub async fn view(&self, model: &str, reference: &str) -> Result<Option<ViewRow>, StoreError> {
                let op = "read a view";
                let mut qb = Self::query(
                    "SELECT reference, model, first_seq, canonical, root, lineage, parents, \
                     plugin_version FROM views WHERE model = ",
                );
                qb.push_bind(model.to_string())
                    .push(" AND reference = ")
                    .push_bind(reference.to_string());
                let rows = self.fetch(&mut qb, op, model).await?;
                rows.first()
                    .map(rows::view_row)
                    .transpose()
                    .map_err(query_error(op, model))
            }

            pub async fn sources(&self, model: &str, reference: &str) -> Result<Vec<SourceCount>, StoreError> {
                let op = "read a reference's sources";
                let mut qb = Self::query(
                    "SELECT i.system, i.adapter, COUNT(*) AS records, MIN(i.seq) AS first_seq, \
                     MAX(i.occurred_at) AS last_occurred_at \
                     FROM keyed k JOIN intake i ON i.seq = k.seq WHERE k.model = ",
                );
                qb.push_bind(model.to_string())
                    .push(" AND k.reference = ")
                    .push_bind(reference.to_string())
                    .push(" GROUP BY i.system, i.adapter ORDER BY first_seq");
                let rows = self.fetch(&mut qb, op, model).await?;
                rows.iter()
                    .map(|r| {
                        Ok(SourceCount {
                            system: r.try_get("system")?,
                            adapter: r.try_get("adapter")?,
                            records: r.try_get("records")?,
                            last_occurred_at: r.try_get("last_occurred_at")?,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(query_error(op, model))
            }

            pub async fn health(&self) -> Result<Health, StoreError> {
                let op = "check the database";
                self.stats.add(1);
                let applied: Vec<i64> = sqlx::query_scalar(
                    "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
                )
                .fetch_all(&self.pool)
                .await
                .map_err(query_error(op, "*"))?;
                let missing = Self::MIGRATOR
                    .iter()
                    .filter(|m| !applied.contains(&m.version))
                    .map(|m| format!("{} {}", m.version, m.description))
                    .collect();
                Ok(Health { missing_migrations: missing })
            }

            pub async fn values(&self, model: &str, offset: usize, limit: usize) -> Result<Vec<ValueRow>, StoreError> {
                let op = "read values";
                // Parents not projected yet sort last on both backends.
                let mut qb = Self::query(&format!(
                    "SELECT k.parents, {RECORD_COLUMNS} FROM keyed k JOIN intake i ON i.seq = k.seq \
                     LEFT JOIN views v ON v.reference = k.parent_ref WHERE k.model = "
                ));
                qb.push_bind(model.to_string())
                    .push(
                        " ORDER BY COALESCE(v.first_seq, 9223372036854775807), k.parent_ref, \
                         i.occurred_micros, i.seq LIMIT ",
                    )
                    .push_bind(limit as i64)
                    .push(" OFFSET ")
                    .push_bind(offset as i64);
                let rows = self.fetch(&mut qb, op, model).await?;
                rows::value_rows(&rows, op, model)
            }

            fn push_filter(qb: &mut sqlx::QueryBuilder<$db>, filter: &ParkedFilter) {
                if let Some(model) = &filter.model {
                    qb.push(" AND p.model = ").push_bind(model.clone());
                }
                if let Some(reason) = filter.reason {
                    qb.push(" AND p.reason = ").push_bind(reason.as_str());
                }
            }

            pub async fn parked(&self, filter: &ParkedFilter, after_seq: i64, limit: usize) -> Result<Vec<ParkedRow>, StoreError> {
                let op = "read parked";
                let model = filter.model.as_deref().unwrap_or("*");
                let mut qb = Self::query(&format!(
                    "SELECT p.reason, p.details, p.awaited_model, p.awaited_key, p.attempts, \
                     p.first_micros, p.last_micros, {RECORD_COLUMNS} \
                     FROM parked p JOIN intake i ON i.seq = p.seq WHERE p.seq > "
                ));
                qb.push_bind(after_seq);
                Self::push_filter(&mut qb, filter);
                qb.push(" ORDER BY p.seq LIMIT ").push_bind(limit as i64);
                let rows = self.fetch(&mut qb, op, model).await?;
                rows.iter()
                    .map(rows::parked_row)
                    .collect::<Result<_, _>>()
                    .map_err(query_error(op, model))
            }

            /// Moves the parked records matching `condition` (a predicate over `parked p`) to
            /// the back of the queue, in intake order, keeping their attempts; returns how many.
            async fn move_parked(
                &self,
                tx: &mut sqlx::Transaction<'static, $db>,
                operation: &'static str,
                model: &str,
                condition: impl Fn(&mut sqlx::QueryBuilder<$db>),
            ) -> Result<u64, StoreError> {
                let mut qb = Self::query(
                    "INSERT INTO queue (model, seq, attempts, first_parked_micros) \
                     SELECT p.model, p.seq, p.attempts, p.first_micros FROM parked p WHERE ",
                );
                condition(&mut qb);
                qb.push(" ORDER BY p.seq ON CONFLICT (seq) DO NOTHING");
                let moved = self.exec(&mut qb, tx, operation, model).await?;
                if moved > 0 {
                    let mut qb =
                        Self::query("DELETE FROM parked WHERE seq IN (SELECT p.seq FROM parked p WHERE ");
                    condition(&mut qb);
                    qb.push(")");
                    self.exec(&mut qb, tx, operation, model).await?;
                }
                Ok(moved)
            }

            /// Healing, inside an association commit, after the batch left the queue:
            /// - records this batch parked for a key that exists by now (another model's
            ///   batch claimed it after this batch's lookup, and that batch's healing ran
            ///   before these records were parked) go back to the queue;
            /// - records parked anywhere waiting for a key this batch claimed go back to
            ///   the queue, found through the index on the awaited key.
            ///
            /// Association commits are serialised (SQLite's single writer, PostgreSQL's
            /// advisory lock), so the two halves never miss each other.
            async fn heal(
                &self,
                tx: &mut sqlx::Transaction<'static, $db>,
                model: &str,
                claims: &[(String, String)],
                parked: &[ParkRow],
            ) -> Result<u64, StoreError> {
                let op = "heal parked records";
                let mut healed = 0;
                let waiting: Vec<i64> = parked
                    .iter()
                    .filter(|p| p.awaiting.is_some())
                    .map(|p| p.seq)
                    .collect();
                for chunk in waiting.chunks(IN_LIST_MAX) {
                    healed += self
                        .move_parked(tx, op, model, |qb| {
                            qb.push(
                                "EXISTS (SELECT 1 FROM keys k WHERE k.model = p.awaited_model \
                                 AND k.key = p.awaited_key) AND ",
                            );
                            push_in_ints(qb, "p.seq", chunk);
                        })
                        .await?;
                }
                let keys: Vec<String> = claims.iter().map(|(key, _)| key.clone()).collect();
                for chunk in keys.chunks(IN_LIST_MAX - 1) {
                    healed += self
                        .move_parked(tx, op, model, |qb| {
                            qb.push("p.awaited_model = ")
                                .push_bind(model.to_string())
                                .push(" AND ");
                            push_in_strings(qb, "p.awaited_key", chunk);
                        })
                        .await?;
                }
                Ok(healed)
            }

            pub async fn requeue(&self, filter: &ParkedFilter) -> Result<u64, StoreError> {
                let op = "requeue parked";
                let model = filter.model.as_deref().unwrap_or("*");
                let mut tx = self.begin(op, model).await?;
                let moved = self
                    .move_parked(&mut tx, op, model, |qb| {
                        qb.push("1 = 1");
                        Self::push_filter(qb, filter);
                    })
                    .await?;
                self.commit(tx, op, model).await?;
                Ok(moved)
            }

            /// Inside a projection commit: the failed references keep their mark, with the
            /// error. One statement per failed reference (each has its own message);
            /// failures are rare and a batch with many is narrowed down first anyway.
            async fn mark_projection_failed(
                &self,
                tx: &mut sqlx::Transaction<'static, $db>,
                model: &str,
                failed: &[ProjectFailure],
            ) -> Result<(), StoreError> {
                for f in failed {
                    let mut qb = Self::query("UPDATE dirty SET error = ");
                    qb.push_bind(f.error.clone())
                        .push(" WHERE reference = ")
                        .push_bind(f.reference.clone())
                        .push(" AND stamp = ")
                        .push_bind(f.stamp);
                    self.exec(&mut qb, tx, "record a failed projection", model).await?;
                }
                Ok(())
            }

            pub async fn record_version(&self, row: &PluginVersionRow) -> Result<(), StoreError> {
                let mut qb = Self::query(
                    "INSERT INTO plugin_versions (model, version, file, archive, description, \
                     first_loaded_micros, last_current_micros) VALUES (",
                );
                let mut values = qb.separated(", ");
                values
                    .push_bind(row.model.clone())
                    .push_bind(row.version.clone())
                    .push_bind(row.file.clone())
                    .push_bind(row.archive.clone())
                    .push_bind(row.description.clone())
                    .push_bind(row.first_loaded_micros)
                    .push_bind(row.last_current_micros);
                qb.push(
                    ") ON CONFLICT (model, version) DO UPDATE SET file = excluded.file, \
                     archive = excluded.archive",
                );
                self.execute(&mut qb, "record a plugin version", &row.model).await?;
                Ok(())
            }

            pub async fn plugin_versions(&self, model: Option<&str>) -> Result<Vec<PluginVersionRow>, StoreError> {
                let op = "read plugin versions";
                let mut qb = Self::query(
                    "SELECT model, version, file, archive, description, first_loaded_micros, \
                     last_current_micros FROM plugin_versions",
                );
                if let Some(model) = model {
                    qb.push(" WHERE model = ").push_bind(model.to_string());
                }
                qb.push(" ORDER BY model, last_current_micros DESC, version");
                let rows = self.fetch(&mut qb, op, model.unwrap_or("*")).await?;
                rows.iter()
                    .map(|r| {
                        Ok(PluginVersionRow {
                            model: r.try_get("model")?,
                            version: r.try_get("version")?,
                            file: r.try_get("file")?,
                            archive: r.try_get("archive")?,
                            description: r.try_get("description")?,
                            first_loaded_micros: r.try_get("first_loaded_micros")?,
                            last_current_micros: r.try_get("last_current_micros")?,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(query_error(op, model.unwrap_or("*")))
            }

            pub async fn set_current(&self, change: &CurrentChange) -> Result<Switched, StoreError> {
                let op = "make a plugin version current";
                let model = change.model.as_str();
                let mut tx = self.begin(op, model).await?;
                let mut qb = Self::query("SELECT plugin_version FROM models WHERE name = ");
                qb.push_bind(model.to_string());
                self.stats.add(1);
                let before: Option<String> = qb
                    .build_query_scalar()
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(query_error(op, model))?;
                let changed = before.as_deref() != Some(change.version.as_str());
                let now = now_micros();
                let mut qb = Self::query(
                    "INSERT INTO models (name, kind, plugin_version, known_since, source, \
                     folder_version, since_micros, state) VALUES (",
                );
                let mut values = qb.separated(", ");
                values
                    .push_bind(model.to_string())
                    .push_bind(change.kind.clone())
                    .push_bind(change.version.clone())
                    .push_bind(now)
                    .push_bind(change.source.as_str())
                    .push_bind(change.folder_version.clone())
                    .push_bind(now)
                    .push_bind("serving");
                qb.push(
                    ") ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, \
                     plugin_version = excluded.plugin_version, source = excluded.source, \
                     folder_version = excluded.folder_version, state = excluded.state, \
                     since_micros = CASE WHEN models.plugin_version = excluded.plugin_version \
                     THEN models.since_micros ELSE excluded.since_micros END",
                );
                self.exec(&mut qb, &mut tx, op, model).await?;
                let mut switched = Switched { changed, ..Switched::default() };
                if changed {
                    let mut qb = Self::query("UPDATE plugin_versions SET last_current_micros = ");
                    qb.push_bind(now)
                        .push(" WHERE model = ")
                        .push_bind(model.to_string())
                        .push(" AND version = ")
                        .push_bind(change.version.clone());
                    self.exec(&mut qb, &mut tx, op, model).await?;
                    let mut qb = Self::stale_views(model, &change.version);
                    switched.marked = self.exec(&mut qb, &mut tx, op, model).await?;
                    let mut qb = Self::query("UPDATE dirty SET error = NULL WHERE model = ");
                    qb.push_bind(model.to_string()).push(" AND error IS NOT NULL");
                    self.exec(&mut qb, &mut tx, op, model).await?;
                    switched.requeued = self
                        .move_parked(&mut tx, op, model, |qb| {
                            // What the old version's output caused: its failures, and
                            // keys too long for the index (a new version may key otherwise).
                            qb.push("p.model = ")
                                .push_bind(model.to_string())
                                .push(" AND p.reason IN (")
                                .push_bind(ParkReason::PluginFailed.as_str())
                                .push(", ")
                                .push_bind(ParkReason::StoreRefused.as_str())
                                .push(")");
                        })
                        .await?;
                }
                self.commit(tx, op, model).await?;
                Ok(switched)
            }

            /// Marks the views of `model` not made by `version` dirty. A reference already
            /// dirty gets a new stamp (a projection in flight with the old version will not
            /// clear it); a new mark sorts after fresh work, so re-projection runs in the
            /// background of intake.
            fn stale_views(model: &str, version: &str) -> sqlx::QueryBuilder<$db> {
                let mut qb = Self::query(
                    "INSERT INTO dirty (reference, model, stamp) SELECT reference, model, ",
                );
                qb.push_bind(REPROJECT_STAMP)
                    .push(" FROM views WHERE model = ")
                    .push_bind(model.to_string())
                    .push(" AND plugin_version <> ")
                    .push_bind(version.to_string())
                    .push(" ON CONFLICT (reference) DO UPDATE SET stamp = dirty.stamp + 1, error = NULL");
                qb
            }

            pub async fn mark_stale_views(&self, model: &str, version: &str) -> Result<u64, StoreError> {
                let mut qb = Self::stale_views(model, version);
                self.execute(&mut qb, "mark stale views", model).await
            }

            pub async fn plugin_states(&self) -> Result<Vec<PluginState>, StoreError> {
                let op = "read plugin states";
                let mut qb = Self::query(
                    "SELECT name, kind, plugin_version, source, folder_version, since_micros, state \
                     FROM models ORDER BY name",
                );
                let rows = self.fetch(&mut qb, op, "*").await?;
                rows.iter()
                    .map(|r| {
                        Ok(PluginState {
                            model: r.try_get("name")?,
                            kind: r.try_get("kind")?,
                            version: r.try_get("plugin_version")?,
                            source: VersionSource::parse(r.try_get::<&str, _>("source")?),
                            folder_version: r.try_get("folder_version")?,
                            since_micros: r.try_get("since_micros")?,
                            state: r.try_get("state")?,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(query_error(op, "*"))
            }

            pub async fn set_plugin_state(&self, model: &str, state: &str) -> Result<(), StoreError> {
                let mut qb = Self::query("UPDATE models SET state = ");
                qb.push_bind(state.to_string())
                    .push(" WHERE name = ")
                    .push_bind(model.to_string());
                self.execute(&mut qb, "record a plugin state", model).await?;
                Ok(())
            }

            pub async fn record_file(&self, row: &PluginFileRow) -> Result<(), StoreError> {
                let mut qb = Self::query(
                    "INSERT INTO plugin_files (file, model, version, error, checked_micros) VALUES (",
                );
                let mut values = qb.separated(", ");
                values
                    .push_bind(row.file.clone())
                    .push_bind(row.model.clone())
                    .push_bind(row.version.clone())
                    .push_bind(row.error.clone())
                    .push_bind(row.checked_micros);
                qb.push(
                    ") ON CONFLICT (file) DO UPDATE SET model = COALESCE(excluded.model, plugin_files.model), \
                     version = COALESCE(excluded.version, plugin_files.version), \
                     error = excluded.error, checked_micros = excluded.checked_micros",
                );
                self.execute(&mut qb, "record a plugin file", row.model.as_deref().unwrap_or("*")).await?;
                Ok(())
            }

            pub async fn forget_file(&self, file: &str) -> Result<(), StoreError> {
                let mut qb = Self::query("DELETE FROM plugin_files WHERE file = ");
                qb.push_bind(file.to_string());
                self.execute(&mut qb, "forget a plugin file", "*").await?;
                Ok(())
            }

            pub async fn plugin_files(&self) -> Result<Vec<PluginFileRow>, StoreError> {
                let op = "read plugin files";
                let mut qb = Self::query(
                    "SELECT file, model, version, error, checked_micros FROM plugin_files ORDER BY file",
                );
                let rows = self.fetch(&mut qb, op, "*").await?;
                rows.iter()
                    .map(|r| {
                        Ok(PluginFileRow {
                            file: r.try_get("file")?,
                            model: r.try_get("model")?,
                            version: r.try_get("version")?,
                            error: r.try_get("error")?,
                            checked_micros: r.try_get("checked_micros")?,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(query_error(op, "*"))
            }

            pub async fn reprojection(&self, model: &str, version: &str) -> Result<Progress, StoreError> {
                let op = "read re-projection progress";
                let mut qb = Self::query(
                    "SELECT CAST(COUNT(*) AS BIGINT) AS total, \
                     CAST(COALESCE(SUM(CASE WHEN plugin_version = ",
                );
                qb.push_bind(version.to_string())
                    .push(
                        " THEN 1 ELSE 0 END), 0) AS BIGINT) AS current, \
                         (SELECT CAST(COUNT(*) AS BIGINT) FROM dirty WHERE model = ",
                    )
                    .push_bind(model.to_string())
                    .push(" AND error IS NOT NULL) AS failed FROM views WHERE model = ")
                    .push_bind(model.to_string());
                let rows = self.fetch(&mut qb, op, model).await?;
                let row = rows.first().ok_or_else(|| {
                    query_error(op, model)(sqlx::Error::RowNotFound)
                })?;
                let get = |name: &str| -> Result<u64, StoreError> {
                    row.try_get::<i64, _>(name)
                        .map(|v| v.max(0) as u64)
                        .map_err(query_error(op, model))
                };
                Ok(Progress {
                    current: get("current")?,
                    total: get("total")?,
                    failed: get("failed")?,
                })
            }

            /// Runs one statement on the pool, counting it; returns the rows it affected.
            async fn execute(
                &self,
                qb: &mut sqlx::QueryBuilder<$db>,
                operation: &'static str,
                model: &str,
            ) -> Result<u64, StoreError> {
                self.stats.add(1);
                Ok(qb
                    .build()
                    .execute(&self.pool)
                    .await
                    .map_err(query_error(operation, model))?
                    .rows_affected())
            }

            pub async fn counts(&self) -> Result<Counts, StoreError> {
                let err = || query_error("count", "*");
                self.stats.add(7);
                let pairs = |sql: &'static str| {
                    sqlx::query_as::<_, (String, i64)>(sql).fetch_all(&self.pool)
                };
                Ok(Counts {
                    intake: sqlx::query_scalar("SELECT COUNT(*) FROM intake")
                        .fetch_one(&self.pool)
                        .await
                        .map_err(err())?,
                    queued: pairs("SELECT model, COUNT(*) FROM queue GROUP BY model ORDER BY model")
                        .await
                        .map_err(err())?,
                    dirty: pairs("SELECT model, COUNT(*) FROM dirty GROUP BY model ORDER BY model")
                        .await
                        .map_err(err())?,
                    references: pairs("SELECT model, COUNT(*) FROM views GROUP BY model ORDER BY model")
                        .await
                        .map_err(err())?,
                    keyed: pairs("SELECT model, COUNT(*) FROM keyed GROUP BY model ORDER BY model")
                        .await
                        .map_err(err())?,
                    keys: sqlx::query_scalar("SELECT COUNT(*) FROM keys")
                        .fetch_one(&self.pool)
                        .await
                        .map_err(err())?,
                    parked: sqlx::query_as::<_, (String, String, i64)>(
                        "SELECT model, reason, COUNT(*) FROM parked GROUP BY model, reason \
                         ORDER BY model, reason",
                    )
                    .fetch_all(&self.pool)
                    .await
                    .map_err(err())?,
                })
            }
        }
    };
}

pub(crate) use impl_shared;
