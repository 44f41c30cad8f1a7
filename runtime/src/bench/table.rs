//! The two printers of a bench result: the human table and the JSON.

use crate::profile::CostFit;
use std::fmt::Write as _;

use super::*;

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.digits$}"))
}

fn hist(h: &[usize]) -> String {
    h.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(" ")
}

/// The human table.
pub fn format_table(r: &BenchResult) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "model {} ({}, {} layers, {}, on {}), {} inputs from {}{}",
        r.model,
        r.task,
        r.num_layers,
        r.quantization,
        r.backend,
        r.n,
        r.data,
        if r.failed.is_empty() { String::new() } else { format!(" ({} failed)", r.failed.len()) }
    );
    let _ = writeln!(
        s,
        "cold start {:.1} ms (answering; every stage planned at {:.1} ms), peak RSS {} MB, tokens mean {:.1} / p50 {:.0} / max {} ({} truncated)",
        r.cold_start_ms,
        r.all_stages_ms,
        opt(r.peak_rss_mb, 1),
        r.tokens.mean,
        r.tokens.p50,
        r.tokens.max,
        r.tokens.truncated
    );
    let main = &r.main;
    let _ = writeln!(
        s,
        "\n{} τ = {}: accuracy {}{}  layer speed-up {:.2}×  wall speed-up {}×",
        r.signal,
        main.point.threshold,
        opt(main.accuracy(), 4),
        main.point.f1.map(|f| format!("  F1 {f:.4}")).unwrap_or_default(),
        main.point.layer_speedup,
        opt(main.wall_speedup, 2)
    );
    let _ = writeln!(s, "{:<14}{:>9}{:>9}{:>9}{:>9}", "latency ms", "p50", "p95", "p99", "mean");
    let row =
        |name: &str, l: &LatencyStats| format!("{name:<14}{:>9.3}{:>9.3}{:>9.3}{:>9.3}\n", l.p50, l.p95, l.p99, l.mean);
    s.push_str(&row("early exit", &main.latency_ms));
    if let Some(f) = &r.full_depth_latency_ms {
        s.push_str(&row("full depth", f));
    }
    if let Some(acc) = r.full_depth_accuracy {
        let _ = writeln!(s, "full-depth accuracy {acc:.4}");
    }
    let _ = writeln!(s, "exit histogram (layers 1..{}): {}", r.num_layers, hist(&main.point.exit_histogram));
    if let Some(sweep) = &r.sweep {
        let _ = writeln!(
            s,
            "\n{:>8}{:>9}{:>8}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}  exit histogram",
            "τ", "accuracy", "F1", "layer×", "wall×", "p50", "p95", "p99", "mean"
        );
        for t in sweep {
            let _ = writeln!(
                s,
                "{:>8}{:>9}{:>8}{:>9.2}{:>9}{:>9.3}{:>9.3}{:>9.3}{:>9.3}  {}",
                t.point.threshold,
                opt(t.accuracy(), 4),
                opt(t.point.f1, 4),
                t.point.layer_speedup,
                opt(t.wall_speedup, 2),
                t.latency_ms.p50,
                t.latency_ms.p95,
                t.latency_ms.p99,
                t.latency_ms.mean,
                hist(&t.point.exit_histogram)
            );
        }
    }
    let c = &r.stage_costs;
    let _ = writeln!(s, "\nstage cost, ms per call (full-depth runs)");
    let _ =
        writeln!(s, "{:>10}{:>7}{:>10}{:>12}{:>9}{:>9}", "tokens", "inputs", "tokenize", "embeddings", "layer", "exit");
    for b in &c.by_tokens {
        let _ = writeln!(
            s,
            "{:>10}{:>7}{:>10.3}{:>12.3}{:>9.3}{:>9.3}",
            format!("{}-{}", b.min_tokens, b.max_tokens),
            b.inputs,
            b.tokenize_ms,
            b.embeddings_ms,
            b.layer_ms,
            b.exit_ms
        );
    }
    let fit = |name: &str, f: &CostFit| {
        format!("{name:<11}{:.4} + {:.3e}·t + {:.3e}·t²  (rmse {:.4} ms, n {})\n", f.a, f.b, f.c, f.rmse_ms, f.samples)
    };
    s.push_str("fitted ms(t), t = tokens:\n");
    s.push_str(&fit("tokenize", &c.tokenize));
    s.push_str(&fit("embeddings", &c.embeddings));
    s.push_str(&fit("layer", &c.layer));
    s.push_str(&fit("exit", &c.exit));
    s.push_str(&fit("overhead", &c.overhead));
    s
}

/// The JSON printer.
pub fn to_json(r: &BenchResult) -> String {
    serde_json::to_string_pretty(r).expect("a bench result always serializes")
}
