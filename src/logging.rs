//! Logging set-up of the binary: `FORKLINE_LOG` (an `EnvFilter`, default
//! `warn,forkline=info`) to standard error, without delta-rs's notes about
//! commit races that forkline expects and retries.
//!
//! Several processes on one store (two servers, a server and `forkline
//! compact`, a few `forkline run …`) race for each Delta commit. delta-rs
//! (`deltalake-core` 1.1) logs every step of a lost race: at WARN, from
//! target `deltalake_core::kernel::transaction`, "table updated but
//! max_retries is 0, failing immediately", "table updated during transaction,
//! checking for conflicts" and "version already exists, will retry", and from
//! `deltalake_core::logstore` "commit entry already exists"; and at ERROR
//! "exceeded maximum commit attempts" with `max_retries=0`, which is how a
//! catalog write that asked for no retries (`Store::append_if_unchanged`)
//! reports a lost race that forkline then retries itself. Those events are
//! dropped here, matched by target, level and exact message (and
//! `max_retries=0` for the ERROR one); every other event of delta-rs, real
//! failures included ("conflict detected, aborting transaction", "commit
//! failed, aborting", "exceeded maximum commit attempts" after retries, the
//! object store's own warnings), still shows. A `FORKLINE_LOG` that names
//! `deltalake` turns this off, for debugging races.

use std::fmt::Debug;

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata};
use tracing_subscriber::filter::FilterExt;
use tracing_subscriber::layer::{Context, Filter, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The filter when `FORKLINE_LOG` is unset (or unparsable).
pub const DEFAULT_FILTER: &str = "warn,forkline=info";

const TRANSACTION: &str = "deltalake_core::kernel::transaction";
const LOGSTORE: &str = "deltalake_core::logstore";

/// Installs the global subscriber: `FORKLINE_LOG` to standard error, quiet about expected commit races.
pub fn init() {
    let configured = std::env::var("FORKLINE_LOG").ok();
    let filter =
        EnvFilter::try_from_env("FORKLINE_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let quiet = !configured.is_some_and(|c| c.contains("deltalake"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry();
    if quiet {
        registry
            .with(fmt.with_filter(filter.and(QuietCommitRaces)))
            .init();
    } else {
        registry.with(fmt.with_filter(filter)).init();
    }
}

/// Drops delta-rs's events about commit races it or forkline retries (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct QuietCommitRaces;

impl<S> Filter<S> for QuietCommitRaces {
    fn enabled(&self, _: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        true
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if meta.is_event() && matches!(meta.target(), TRANSACTION | LOGSTORE) {
            Interest::sometimes()
        } else {
            Interest::always()
        }
    }

    fn event_enabled(&self, event: &Event<'_>, _: &Context<'_, S>) -> bool {
        !is_expected_commit_race(event)
    }

    /// Drops events, never admits more: the level of `FORKLINE_LOG` stays the
    /// subscriber's maximum. Without a hint the combined filter has none, and
    /// the `log` crate's maximum became TRACE: every `log::debug!` of
    /// DataFusion and parquet (on every file a query opens) formatted its
    /// arguments, plans and predicates included, only to be dropped.
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::TRACE)
    }
}

/// Whether `event` is one of delta-rs's notes about an expected commit race.
pub fn is_expected_commit_race(event: &Event<'_>) -> bool {
    let meta = event.metadata();
    let (target, level) = (meta.target(), *meta.level());
    if !matches!(target, TRANSACTION | LOGSTORE) || !matches!(level, Level::WARN | Level::ERROR) {
        return false;
    }
    let mut fields = Fields::default();
    event.record(&mut fields);
    let message = fields.message.as_deref().unwrap_or_default();
    match (target, level) {
        (TRANSACTION, Level::WARN) => matches!(
            message,
            "table updated but max_retries is 0, failing immediately"
                | "table updated during transaction, checking for conflicts"
                | "version already exists, will retry"
        ),
        (TRANSACTION, Level::ERROR) => {
            message == "exceeded maximum commit attempts" && fields.max_retries == Some(0)
        }
        (LOGSTORE, Level::WARN) => message == "commit entry already exists",
        _ => false,
    }
}

#[derive(Default)]
struct Fields {
    message: Option<String>,
    max_retries: Option<i128>,
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "max_retries" {
            self.max_retries = Some(value.into());
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() == "max_retries" {
            self.max_retries = Some(value.into());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_string());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        match field.name() {
            "message" => self.message = Some(format!("{value:?}")),
            "max_retries" => self.max_retries = format!("{value:?}").parse().ok(),
            _ => {}
        }
    }
}
