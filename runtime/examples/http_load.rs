//! The HTTP API's load check: C clients, each on its own keep-alive connection, send N `POST /v1/classify`
//! requests each (one sentence of a GLUE TSV per request, in turn) to a running `cosee-edge serve --http`, and
//! report throughput, latency percentiles and that every request got exactly one answer, the right one: a 200
//! with the label the server gave the same sentence in a sequential warm-up pass (so answers cannot have been
//! swapped between clients). A measurement, not a test: `scripts/http-load.sh` runs it against the binary and adds
//! the server's memory.
//!
//!   cargo run --release --example http_load -- --addr 127.0.0.1:8080 --data tests/data/sst2-dev-40.tsv \
//!       [--clients 8] [--requests 2000]
//!
//! Exits 1 if any request failed or got a wrong answer.

use clap::Parser;
use cosee_runtime::glue::{read_tsv, Task};
use cosee_runtime::metrics::percentile;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser)]
struct Args {
    /// The server's address, IP:PORT.
    #[arg(long)]
    addr: String,
    /// SST-2 TSV whose sentences are sent.
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Requests per client.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
}

/// One request: status, label (if any), milliseconds.
fn classify(agent: &ureq::Agent, url: &str, text: &str) -> Result<(u16, Option<String>, f64), String> {
    let start = Instant::now();
    let mut response = agent
        .post(url)
        .header("content-type", "application/json")
        .send(json!({ "text": text }).to_string())
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().map_err(|e| e.to_string())?;
    // Until the whole answer is read: what a caller waits for.
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let value: Value = serde_json::from_str(&body).map_err(|e| format!("not JSON ({e}): {body}"))?;
    Ok((status, value["label"].as_str().map(str::to_string), ms))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let sentences: Vec<String> = match read_tsv(Task::Sst2, &args.data) {
        Ok(examples) => examples.into_iter().map(|e| e.text_a).collect(),
        Err(e) => {
            eprintln!("http_load: {e}");
            return ExitCode::from(2);
        }
    };
    let url = format!("http://{}/v1/classify", args.addr);
    let agent = |_: ()| -> ureq::Agent { ureq::Agent::config_builder().http_status_as_error(false).build().into() };

    // The answers to compare with: one sequential pass.
    let warm = agent(());
    let mut expected = HashMap::new();
    for text in &sentences {
        match classify(&warm, &url, text) {
            Ok((200, Some(label), _)) => {
                expected.insert(text.clone(), label);
            }
            other => {
                eprintln!("http_load: warm-up request failed: {other:?}");
                return ExitCode::from(1);
            }
        }
    }

    let started = Instant::now();
    let results: Vec<(Vec<f64>, usize, usize)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..args.clients)
            .map(|client| {
                let (url, sentences, expected, agent) = (&url, &sentences, &expected, agent(()));
                scope.spawn(move || {
                    let (mut latencies, mut wrong, mut failed) = (Vec::with_capacity(args.requests), 0, 0);
                    for i in 0..args.requests {
                        let text = &sentences[(client * 7 + i) % sentences.len()];
                        match classify(&agent, url, text) {
                            Ok((200, Some(label), ms)) => {
                                latencies.push(ms);
                                wrong += usize::from(expected.get(text) != Some(&label));
                            }
                            Ok(other) => {
                                eprintln!("http_load: client {client} request {i}: {other:?}");
                                failed += 1;
                            }
                            Err(e) => {
                                eprintln!("http_load: client {client} request {i}: {e}");
                                failed += 1;
                            }
                        }
                    }
                    (latencies, wrong, failed)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_default()).collect()
    });
    let seconds = started.elapsed().as_secs_f64();

    let sent = args.clients * args.requests;
    let latencies: Vec<f64> = results.iter().flat_map(|r| r.0.iter().copied()).collect();
    let wrong: usize = results.iter().map(|r| r.1).sum();
    let failed: usize = results.iter().map(|r| r.2).sum();
    let answered = latencies.len();
    let summary = json!({
        "clients": args.clients,
        "requests": sent,
        "answered_200": answered,
        "failed": failed,
        "wrong_label": wrong,
        "seconds": seconds,
        "requests_per_s": answered as f64 / seconds,
        "p50_ms": percentile(&latencies, 50.0),
        "p90_ms": percentile(&latencies, 90.0),
        "p99_ms": percentile(&latencies, 99.0),
        "max_ms": percentile(&latencies, 100.0),
    });
    println!(
        "{} clients × {} requests: {answered} answered (200), {failed} failed, {wrong} with a wrong label; {:.1} s, \
         {:.1} requests/s; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        args.clients,
        args.requests,
        seconds,
        answered as f64 / seconds,
        summary["p50_ms"].as_f64().unwrap_or(f64::NAN),
        summary["p90_ms"].as_f64().unwrap_or(f64::NAN),
        summary["p99_ms"].as_f64().unwrap_or(f64::NAN),
        summary["max_ms"].as_f64().unwrap_or(f64::NAN),
    );
    println!("{summary}");
    if answered == sent && wrong == 0 && failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
