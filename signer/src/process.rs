//! The edges of a process, the same for both binaries: logs to stderr, and the signal to stop.

/// Logs to stderr, filtered by `filter` (`SIGIL_LOG` syntax: `info`, `sigil_signer=debug`; an
/// invalid filter means `info`), as text or as one JSON object per line.
pub fn init_logging(filter: &str, json: bool) {
    let builder = tracing_subscriber::fmt().with_env_filter(log_filter(filter)).with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

/// `filter`, or `info` when it is empty or invalid (an empty filter would log nothing at all).
fn log_filter(filter: &str) -> tracing_subscriber::EnvFilter {
    match filter.trim() {
        "" => "info".into(),
        filter => tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "info".into()),
    }
}

/// Completes on SIGTERM (how Kubernetes stops a container) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use tracing::level_filters::LevelFilter;

    use super::*;

    /// An unset SIGIL_LOG reaches here as "": the process must still log at info.
    #[test]
    fn an_empty_or_invalid_filter_means_info() {
        for filter in ["", "  ", "=nonsense=[", "info"] {
            assert_eq!(log_filter(filter).max_level_hint(), Some(LevelFilter::INFO), "{filter:?}");
        }
        assert_eq!(log_filter("debug").max_level_hint(), Some(LevelFilter::DEBUG));
    }
}
