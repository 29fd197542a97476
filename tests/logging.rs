//! The binary's logging set-up keeps the `log` crate at the configured level,
//! so dependencies' debug logging (DataFusion and parquet, on every file a
//! query opens) is skipped before its arguments are formatted.

#[test]
fn log_crate_follows_the_configured_level() {
    // SAFETY: the only test in this binary; no other thread reads the environment.
    unsafe { std::env::set_var("FORKLINE_LOG", "warn,forkline=info") };
    forkline::logging::init();
    assert_eq!(log::max_level(), log::LevelFilter::Info);
    assert!(!log::log_enabled!(target: "datafusion_physical_plan::stream", log::Level::Debug));
    assert!(!log::log_enabled!(target: "forkline::query", log::Level::Debug));
    assert!(log::log_enabled!(target: "forkline::query", log::Level::Info));
}
