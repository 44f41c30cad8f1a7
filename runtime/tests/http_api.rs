//! The HTTP API (`cosee-edge serve --http`) driven by a real HTTP client over loopback: every endpoint, every 4xx
//! and the 503, answers equal to the library's, graceful shutdown in the library and on SIGTERM in the binary.

use cosee_runtime::http::{self, Limits, Server};
use cosee_runtime::serving::{ServeOptions, ThresholdControl};
use cosee_runtime::{Engine, ExitPolicy, Input, MAX_LINE_BYTES};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

fn shipped() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/sst2-minilm-l6")
}

fn engine() -> Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| Engine::load(&shipped()).expect("the shipped package loads")).clone()
}

fn start(limits: Limits) -> Server {
    let engine = engine();
    let control = ThresholdControl::new(engine.manifest(), &ServeOptions::default(), str::to_string).unwrap();
    Server::start(engine, control, "127.0.0.1:0".parse().unwrap(), limits).expect("the server starts")
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

/// Status and JSON body of a request; `body` None = GET.
fn call(server: &Server, method: &str, path: &str, body: Option<&[u8]>) -> (u16, Value) {
    let url = format!("http://{}{path}", server.addr());
    let agent = agent();
    let response = match (method, body) {
        ("GET", None) => agent.get(&url).call(),
        ("DELETE", None) => agent.delete(&url).call(),
        ("POST", Some(b)) => agent.post(&url).header("content-type", "application/json").send(b),
        ("PUT", Some(b)) => agent.put(&url).send(b),
        _ => panic!("unsupported {method}"),
    };
    let mut response = response.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
    (status, value)
}

fn post(server: &Server, body: &Value) -> (u16, Value) {
    call(server, "POST", "/v1/classify", Some(body.to_string().as_bytes()))
}

/// A refusal: the status, and a JSON body naming it, whose message contains `says`.
fn assert_refused((status, body): (u16, Value), expected: u16, says: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["status"], expected, "{body}");
    let message = body["error"].as_str().unwrap_or_else(|| panic!("no error message: {body}"));
    assert!(message.contains(says), "expected {says:?} in {message:?}");
}

/// A JSON array of f32 values (null for NaN) back as f32: the answer's values exactly, whatever the last digit of
/// the f64 that serde_json's default (fast, not always correctly rounded) float parser reads them into.
fn f32s(value: &Value) -> Vec<Option<f32>> {
    value.as_array().unwrap().iter().map(|v| v.as_f64().map(|x| x as f32)).collect()
}

const SENTENCES: [&str; 4] = [
    "a tender, funny film",
    "the plot is a mess and the acting is even worse",
    "it 's a charming and often affecting journey .",
    "unflinchingly bleak and desperate",
];

#[test]
fn endpoints_answer_like_the_library() {
    let server = start(Limits::default());
    let (status, health) = call(&server, "GET", "/healthz", None);
    assert_eq!((status, health), (200, json!({"status": "ok"})));

    let (status, model) = call(&server, "GET", "/v1/model", None);
    assert_eq!(status, 200, "{model}");
    assert_eq!(model["labels"], json!(["negative", "positive"]));
    assert_eq!(model["num_layers"], 6);
    assert_eq!(model["signal"], "energy");
    assert_eq!(model["backend"], "tract");
    assert_eq!(model["limits"]["max_text_bytes"], MAX_LINE_BYTES);
    let tau = model["threshold"].as_f64().unwrap() as f32;
    assert_eq!(model["controller"]["threshold"], model["threshold"]);
    assert!(model["controller"]["rungs"].as_array().unwrap().contains(&model["threshold"]), "{model}");

    let library = engine();
    let policy = ExitPolicy { signal: library.default_policy().signal, threshold: tau };
    let (status, one) = post(&server, &json!({"text": SENTENCES[0]}));
    assert_eq!(status, 200, "{one}");
    let want = library.classify_with(&Input::single(SENTENCES[0]), policy).unwrap();
    assert_eq!(one["input"], 1);
    assert_eq!(one["label"], want.label);
    assert_eq!(one["exit_layer"], want.exit_layer);
    assert_eq!(f32s(&one["probs"]), want.probs.iter().map(|&p| Some(p)).collect::<Vec<_>>());
    assert_eq!(f32s(&one["signals"]), want.signals.iter().map(|s| s.is_finite().then_some(*s)).collect::<Vec<_>>());
    // The CLI's keys exactly (the one serializer): the answer's fields plus `input`.
    let cli = cosee_runtime::answer::json_object(1, &Ok(want));
    let mut keys: Vec<&String> = one.as_object().unwrap().keys().collect();
    keys.sort();
    let mut cli_keys: Vec<&String> = cli.keys().collect();
    cli_keys.sort();
    assert_eq!(keys, cli_keys);

    let (status, many) = post(&server, &json!({"texts": SENTENCES}));
    assert_eq!(status, 200, "{many}");
    let answers = many["answers"].as_array().unwrap();
    assert_eq!(answers.len(), SENTENCES.len());
    for (i, (answer, text)) in answers.iter().zip(SENTENCES).enumerate() {
        let want = library.classify_with(&Input::single(text), policy).unwrap();
        assert_eq!(answer["input"], i + 1);
        assert_eq!(
            (answer["label"].as_str().unwrap(), answer["exit_layer"].as_u64().unwrap()),
            (want.label.as_str(), want.exit_layer as u64)
        );
    }
    // A TAB in a string is a pair only for a pair task, as on the CLI's stdin: here it is one text.
    let (status, tabbed) = post(&server, &json!({"text": "a tender\tfunny film"}));
    assert_eq!(status, 200, "{tabbed}");
    server.stop().unwrap();
}

#[test]
fn malformed_requests_get_4xx_json() {
    let limits = Limits { max_body_bytes: 64 * 1024, max_text_bytes: 1000, max_texts: 8, ..Limits::default() };
    let server = start(limits);
    let raw = |body: &[u8]| call(&server, "POST", "/v1/classify", Some(body));
    assert_refused(raw(b"{\"text\": "), 400, "not valid JSON");
    assert_refused(raw(b"not json"), 400, "not valid JSON");
    assert_refused(raw(b""), 400, "not valid JSON");
    assert_refused(post(&server, &json!(["a tender, funny film"])), 422, "expected a JSON object");
    assert_refused(post(&server, &json!({"txt": "x"})), 422, "unknown field `txt`");
    assert_refused(post(&server, &json!({})), 422, "`text` (one input) or `texts`");
    assert_refused(post(&server, &json!({"text": 3})), 422, "a string or a pair");
    assert_refused(post(&server, &json!({"text": ["a", "b", "c"]})), 422, "exactly two strings");
    assert_refused(post(&server, &json!({"texts": "x"})), 422, "`texts` is not a list");
    assert_refused(post(&server, &json!({"texts": []})), 422, "`texts` is empty");
    assert_refused(post(&server, &json!({"text": "a", "texts": ["b"]})), 422, "both `text` and `texts`");

    let (status, body) = post(&server, &json!({"text": ""}));
    assert_refused((status, body.clone()), 422, "empty input");
    assert_eq!(body["input"], 1);
    let (status, body) = post(&server, &json!({"texts": ["fine", " \t "]}));
    assert_refused((status, body.clone()), 422, "whitespace-only");
    assert_eq!(body["input"], 2);
    assert_refused(post(&server, &json!({"text": ["one", "two"]})), 422, "single texts, but a pair");

    let (status, body) = post(&server, &json!({"texts": ["fine", "x".repeat(1001)]}));
    assert_refused((status, body.clone()), 413, "longer than the limit of 1000 bytes");
    assert_eq!(body["input"], 2);
    assert_refused(post(&server, &json!({"texts": vec!["fine"; 9]})), 413, "more than the limit of 8");
    let huge = json!({"text": "y".repeat(100 * 1024)}).to_string();
    assert_refused(raw(huge.as_bytes()), 413, "larger than the limit of 65536 bytes");

    assert_refused(call(&server, "GET", "/v2/classify", None), 404, "no route GET /v2/classify");
    assert_refused(call(&server, "GET", "/v1/classify", None), 405, "does not take GET");
    assert_refused(call(&server, "PUT", "/healthz", Some(b"{}")), 405, "does not take PUT");
    assert_refused(call(&server, "DELETE", "/v1/model", None), 405, "does not take DELETE");

    // After all that, it still answers.
    assert_eq!(post(&server, &json!({"text": "fine"})).0, 200);
}

/// A request long enough (256 inputs at full depth) to be in flight while another one arrives.
fn slow_batch() -> Value {
    json!({ "texts": vec!["an unremarkable film that is neither good nor bad, but long , slow and full of talk"; 256] })
}

#[test]
fn a_full_server_answers_503_and_then_recovers() {
    let server = start(Limits { workers: 1, max_in_flight: 1, ..Limits::default() });
    let addr = server.addr();
    for attempt in 0..3 {
        let slow = std::thread::spawn(move || {
            let url = format!("http://{addr}/v1/classify");
            let mut r = agent().post(&url).send(slow_batch().to_string()).unwrap();
            (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
        });
        std::thread::sleep(Duration::from_millis(300));
        let quick = post(&server, &json!({"text": "fine"}));
        let (slow_status, _) = slow.join().unwrap();
        if slow_status == 200 {
            assert_refused(quick, 503, "requests are already in flight");
            assert_eq!(post(&server, &json!({"text": "fine"})).0, 200, "served again once the slow one is done");
            return;
        }
        eprintln!("attempt {attempt}: the slow request did not get in first ({slow_status}); again");
    }
    panic!("the slow request never ran first");
}

#[test]
fn stop_finishes_the_requests_in_flight() {
    let server = start(Limits::default());
    let addr = server.addr();
    let slow = std::thread::spawn(move || {
        let mut r = agent().post(format!("http://{addr}/v1/classify")).send(slow_batch().to_string()).unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    });
    std::thread::sleep(Duration::from_millis(300));
    server.stop().unwrap();
    let (status, body) = slow.join().unwrap();
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["answers"].as_array().unwrap().len(), 256);
    assert!(std::net::TcpStream::connect(addr).is_err(), "nothing listens after stop");
}

#[test]
fn listen_addresses_default_to_loopback() {
    assert_eq!(http::listen_addr("8080", false).unwrap(), "127.0.0.1:8080".parse().unwrap());
    assert_eq!(http::listen_addr("[::1]:0", false).unwrap(), "[::1]:0".parse().unwrap());
    let refused = http::listen_addr("0.0.0.0:8080", false).unwrap_err().to_string();
    assert!(refused.contains("--allow-remote"), "{refused}");
    assert_eq!(http::listen_addr("0.0.0.0:8080", true).unwrap(), "0.0.0.0:8080".parse().unwrap());
    assert!(http::listen_addr("localhost:x", false).unwrap_err().to_string().contains("PORT or IP:PORT"));
}

#[test]
fn the_binary_serves_http_and_stops_on_sigterm_after_the_requests_in_flight() {
    let bin = env!("CARGO_BIN_EXE_cosee-edge");
    let refused = Command::new(bin)
        .args(["serve", "--model", shipped().to_str().unwrap(), "--http", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2), "{}", String::from_utf8_lossy(&refused.stderr));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--allow-remote"));

    let mut child = Command::new(bin)
        .args(["serve", "--model", shipped().to_str().unwrap(), "--http", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    let addr = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "cosee-edge exited before listening: {log}");
        log.push_str(&line);
        if let Some(rest) = line.trim().strip_prefix("cosee-edge serve: listening on http://") {
            break rest.to_string();
        }
    };
    let url = format!("http://{addr}/v1/classify");
    let (status, body) = {
        let mut r = agent().post(&url).send(json!({"text": "a tender, funny film"}).to_string()).unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    };
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"label\":\"positive\""), "{body}");

    let slow = std::thread::spawn(move || {
        let mut r = agent().post(&url).send(slow_batch().to_string()).unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    });
    std::thread::sleep(Duration::from_millis(300));
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let (status, body) = slow.join().unwrap();
    assert_eq!(status, 200, "the request in flight is answered after SIGTERM: {body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["answers"].as_array().unwrap().len(), 256);
    let exit = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(exit.success(), "{exit}: {log}{rest}");
    assert!(rest.contains("stopped; every request in flight was answered"), "{log}{rest}");
}
