//! The sync layer: turns Services and EndpointSlices into nft transactions, remembering
//! what the table holds so most syncs change only what differs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tracing::{debug, info, warn};

use super::error::Error;
use super::metrics::ProxyMetrics;
use super::nft::Nft;
use super::render::{self, RenderConfig, Ruleset};
use super::state::ProxyState;

/// Whether a sync may update the table in place or must rebuild it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// Change only the chains and elements that differ from the last applied ruleset
    /// (a full rebuild when nothing was applied yet).
    Incremental,
    /// Rebuild the whole table in one transaction, whatever it holds now.
    Full,
}

/// What one sync did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncReport {
    /// Whether the table was rebuilt.
    pub full: bool,
    /// Whether a script was applied at all (an incremental sync with no change applies none).
    pub applied: bool,
    /// Rules in the table afterwards.
    pub rules: usize,
    /// How long the sync took.
    pub took: Duration,
}

/// Programs one nft table; the single writer of it.
///
/// It remembers the ruleset it last applied. An incremental sync renders the difference
/// to the new one; if `nft` rejects that (someone changed the table behind our back), it
/// falls back to a full rebuild at once. After a failed full rebuild the applied state is
/// unknown, so the next sync is full whatever is asked.
#[derive(Debug)]
pub struct Syncer {
    nft: Nft,
    config: RenderConfig,
    applied: Option<Ruleset>,
    metrics: Arc<ProxyMetrics>,
}

impl Syncer {
    /// A syncer for the table in `config`, applying with `nft`. Nothing runs until
    /// [`Syncer::sync`].
    ///
    /// # Errors
    /// [`Error::InvalidTable`] when the table name is not a plain nft identifier.
    pub fn new(
        nft: Nft,
        config: RenderConfig,
        metrics: Arc<ProxyMetrics>,
    ) -> Result<Syncer, Error> {
        if !super::names::is_valid_table_name(&config.table) {
            return Err(Error::InvalidTable(config.table));
        }
        Ok(Syncer {
            nft,
            config,
            applied: None,
            metrics,
        })
    }

    /// The counters this syncer updates.
    pub fn metrics(&self) -> &Arc<ProxyMetrics> {
        &self.metrics
    }

    /// Programs the table for these Services and EndpointSlices.
    ///
    /// # Errors
    /// As [`Nft::apply`], for the full rebuild when an incremental update failed.
    pub async fn sync<'a>(
        &mut self,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
        mode: SyncMode,
    ) -> Result<SyncReport, Error> {
        let state = ProxyState::build(services, slices);
        self.sync_state(&state, mode).await
    }

    /// Programs the table for `state`.
    ///
    /// # Errors
    /// As [`Syncer::sync`].
    pub async fn sync_state(
        &mut self,
        state: &ProxyState,
        mode: SyncMode,
    ) -> Result<SyncReport, Error> {
        let start = Instant::now();
        let new = Ruleset::from_state(state);
        let rules = new.rule_count(&self.config);
        let mut full = mode == SyncMode::Full || self.applied.is_none();
        let mut applied = true;

        if let (false, Some(old)) = (full, &self.applied) {
            match render::render_update(&self.config, old, &new) {
                None => applied = false,
                Some(script) => {
                    if let Err(err) = self.nft.apply(&script).await {
                        warn!(%err, "incremental nft update failed; rebuilding the table");
                        debug!(script, "the rejected update");
                        self.metrics.record_error();
                        full = true;
                    }
                }
            }
        }
        if full {
            self.applied = None;
            let script = render::render_full(&self.config, &new);
            if let Err(err) = self.nft.apply(&script).await {
                self.metrics.record_error();
                return Err(err);
            }
        }

        let took = start.elapsed();
        self.applied = Some(new);
        if applied {
            self.metrics.record_success(
                full,
                took,
                rules,
                state.services.len(),
                state.endpoint_count(),
            );
            info!(
                table = %self.config.table,
                full,
                service_ports = state.services.len(),
                endpoints = state.endpoint_count(),
                rules,
                took_ms = took.as_secs_f64() * 1e3,
                "proxy rules synced"
            );
        }
        Ok(SyncReport {
            full,
            applied,
            rules,
            took,
        })
    }

    /// Removes the table. The next sync rebuilds it.
    ///
    /// # Errors
    /// As [`Nft::apply`].
    pub async fn teardown(&mut self) -> Result<(), Error> {
        self.applied = None;
        self.nft.delete_table(&self.config.table).await?;
        info!(table = %self.config.table, "proxy table removed");
        Ok(())
    }
}
