//! The `--http` flags of `serve`: where the HTTP API listens and how much it takes at once. The server itself is
//! the library's ([`cosee_runtime::http`]).

use super::{UsageError, EXIT_OK};
use cosee_runtime::http::{self, Limits};
use cosee_runtime::serving::ThresholdControl;
use cosee_runtime::settings::OutOfRange;
use cosee_runtime::Engine;
use std::net::SocketAddr;
use std::process::ExitCode;

#[derive(Debug, Default, clap::Args)]
pub struct Args {
    /// Answer over HTTP instead of stdin (docs/http.md): PORT (on 127.0.0.1) or IP:PORT; port 0 picks a free one.
    /// The address listened on is printed on stderr. SIGTERM or ctrl-c stops it after the requests in flight.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    /// Let --http listen on an address other machines can reach (the API has no authentication).
    #[arg(long, requires = "http")]
    pub allow_remote: bool,
    /// Requests the engine runs at once, one thread each (default: one per CPU core).
    #[arg(long, value_name = "N", requires = "http")]
    pub workers: Option<usize>,
    /// Requests accepted at once, running or waiting; beyond, 503 (default: 64 per worker).
    #[arg(long, value_name = "N", requires = "http")]
    pub max_in_flight: Option<usize>,
}

/// Where and how to serve, checked before the package is loaded.
#[derive(Debug)]
pub struct Config {
    addr: SocketAddr,
    limits: Limits,
}

impl Args {
    /// `None` without `--http`.
    pub fn config(&self) -> anyhow::Result<Option<Config>> {
        let Some(spec) = &self.http else { return Ok(None) };
        let addr = http::listen_addr(spec, self.allow_remote).map_err(|e| UsageError(e.to_string()))?;
        for (flag, value) in [("--workers", self.workers), ("--max-in-flight", self.max_in_flight)] {
            if value == Some(0) {
                return Err(UsageError::from(OutOfRange::new(flag, 0, "must be at least 1")).into());
            }
        }
        let mut limits = Limits::default();
        if let Some(n) = self.workers {
            limits.workers = n;
            limits.max_in_flight = 64 * n;
        }
        if let Some(n) = self.max_in_flight {
            limits.max_in_flight = n;
        }
        Ok(Some(Config { addr, limits }))
    }
}

/// Serves until SIGTERM or ctrl-c.
pub fn run(engine: Engine, control: ThresholdControl, config: Config) -> anyhow::Result<ExitCode> {
    let result = http::serve(engine, control, config.addr, config.limits, http::shutdown_signal(), |addr| {
        eprintln!("cosee-edge serve: listening on http://{addr}");
    });
    result?;
    eprintln!("cosee-edge serve: stopped; every request in flight was answered");
    Ok(ExitCode::from(EXIT_OK))
}
