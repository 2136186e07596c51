//! `ragtune serve`: a chat model behind OpenAI's `/v1/chat/completions` and `/v1/models`. Handler
//! threads parse requests and queue them; one batcher thread gathers what is waiting (up to
//! `max_batch`) and answers it in one `chat_batch` call, so concurrent clients share decoding.
//!
//! For testing clients, `faults` makes the server answer a share of requests with 429/500 or hold
//! them without answering, and `request_log` records every request it answered.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tiny_http::{Header, Method, Request, Response};

use super::cache::request_key;
use super::{ChatModel, ChatRequest, Completion, FinishReason, GenerationParams, Message};
use crate::rng::Rng;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeOptions {
    pub host: String,
    /// 0 picks a free port.
    pub port: u16,
    /// Requests answered together.
    pub max_batch: usize,
    /// How long the batcher waits for more requests to join a batch.
    pub batch_wait_ms: u64,
    /// Connections served at once.
    pub workers: usize,
    pub faults: Faults,
    /// Appends `{"key": …}` for every answered request (the key the client's response cache uses).
    pub request_log: Option<PathBuf>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            max_batch: super::DEFAULT_MAX_BATCH,
            batch_wait_ms: 10,
            workers: 16,
            faults: Faults::default(),
            request_log: None,
        }
    }
}

/// Failure injection for testing clients: each chat request fails with 429 or 500 with
/// probability `fail_rate`, or is held `stall_seconds` and dropped unanswered with `stall_rate`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    pub fail_rate: f64,
    pub stall_rate: f64,
    pub stall_seconds: f64,
    pub seed: u64,
}

struct Job {
    request: ChatRequest,
    reply: Sender<Result<Completion>>,
}

struct Shared {
    model: Arc<dyn ChatModel>,
    jobs: Mutex<Sender<Job>>,
    faults: Faults,
    fault_rng: Mutex<Rng>,
    log: Option<Mutex<File>>,
}

/// A running server; dropped, it stops accepting and its handler threads end.
pub struct Server {
    http: Arc<tiny_http::Server>,
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Server {
    pub fn start(model: Arc<dyn ChatModel>, options: &ServeOptions) -> Result<Self> {
        if options.max_batch == 0 || options.workers == 0 {
            bail!("max_batch and workers must be at least 1");
        }
        let faults = &options.faults;
        if !(0.0..=1.0).contains(&(faults.fail_rate + faults.stall_rate)) {
            bail!("fail_rate + stall_rate must be within [0, 1]");
        }
        let http = tiny_http::Server::http((options.host.as_str(), options.port))
            .map_err(|e| anyhow!("cannot listen on {}:{}: {e}", options.host, options.port))?;
        let addr = http
            .server_addr()
            .to_ip()
            .context("the server has no IP address")?;
        let http = Arc::new(http);
        let log = match &options.request_log {
            Some(p) => Some(Mutex::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .with_context(|| format!("cannot write {}", p.display()))?,
            )),
            None => None,
        };
        let (tx, rx) = channel();
        let shared = Arc::new(Shared {
            model: model.clone(),
            jobs: Mutex::new(tx),
            faults: faults.clone(),
            fault_rng: Mutex::new(Rng::new(faults.seed)),
            log,
        });
        let stopping = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let (max_batch, wait) = (
            options.max_batch,
            Duration::from_millis(options.batch_wait_ms),
        );
        threads.push(std::thread::spawn(move || {
            batcher(model, rx, max_batch, wait)
        }));
        for _ in 0..options.workers {
            let (http, shared, stopping) = (http.clone(), shared.clone(), stopping.clone());
            threads.push(std::thread::spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    match http.recv() {
                        Ok(req) => handle(&shared, req),
                        Err(_) => break,
                    }
                }
            }));
        }
        Ok(Self {
            http,
            addr,
            stopping,
            threads,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API root clients use: `http://host:port/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Serves until the process ends.
    pub fn wait(mut self) {
        for t in std::mem::take(&mut self.threads) {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        for _ in 0..self.threads.len() {
            self.http.unblock();
        }
        // Handler threads end at once; the batcher ends when the last job sender is gone.
    }
}

fn batcher(model: Arc<dyn ChatModel>, jobs: Receiver<Job>, max_batch: usize, wait: Duration) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match jobs.recv_timeout(wait) {
                Ok(job) => batch.push(job),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let requests: Vec<ChatRequest> = batch.iter().map(|j| j.request.clone()).collect();
        for (job, answer) in batch.into_iter().zip(model.chat_batch(&requests)) {
            let _ = job.reply.send(answer);
        }
    }
}

fn handle(shared: &Shared, mut req: Request) {
    let (status, body) = match (req.method(), req.url().split('?').next().unwrap_or("")) {
        (Method::Get, "/v1/models") => (
            200,
            json!({"object": "list", "data": [{"id": shared.model.name(), "object": "model", "owned_by": "ragtune"}]}),
        ),
        (Method::Post, "/v1/chat/completions") => {
            let mut text = String::new();
            if let Err(e) = req.as_reader().read_to_string(&mut text) {
                respond(req, 400, error_body(&format!("unreadable body: {e}")));
                return;
            }
            match parse_request(&text) {
                Err(e) => (400, error_body(&format!("{e:#}"))),
                Ok((chat, asked_for)) => match inject_fault(shared) {
                    Some(Fault::Status(code)) => (code, error_body("injected failure")),
                    Some(Fault::Stall(d)) => {
                        std::thread::sleep(d);
                        return; // dropped unanswered: the connection closes
                    }
                    None => answer(shared, chat, &asked_for),
                },
            }
        }
        _ => (
            404,
            error_body("unknown endpoint; try /v1/chat/completions or /v1/models"),
        ),
    };
    respond(req, status, body);
}

/// `asked_for`: the model name the client sent, which the log's key is made with so that it
/// matches the key of the client's response cache.
fn answer(shared: &Shared, chat: ChatRequest, asked_for: &str) -> (u16, Value) {
    let (tx, rx) = channel();
    let queued = shared
        .jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(Job {
            request: chat.clone(),
            reply: tx,
        });
    let answer = match queued {
        Ok(()) => rx.recv().map_err(|_| anyhow!("the model stopped")),
        Err(_) => Err(anyhow!("the server is stopping")),
    };
    match answer.and_then(|a| a) {
        Ok(c) => {
            if let Some(log) = &shared.log {
                let line = json!({"key": request_key(asked_for, &chat)}).to_string() + "\n";
                let mut f = log.lock().unwrap_or_else(|e| e.into_inner());
                let _ = f.write_all(line.as_bytes()).and_then(|_| f.flush());
            }
            (200, completion_body(shared.model.name(), &c))
        }
        Err(e) => (500, error_body(&format!("{e:#}"))),
    }
}

enum Fault {
    Status(u16),
    Stall(Duration),
}

fn inject_fault(shared: &Shared) -> Option<Fault> {
    let f = &shared.faults;
    if f.fail_rate <= 0.0 && f.stall_rate <= 0.0 {
        return None;
    }
    let mut rng = shared.fault_rng.lock().unwrap_or_else(|e| e.into_inner());
    let u = rng.unit();
    if u < f.fail_rate {
        Some(Fault::Status(if rng.below(2) == 0 { 429 } else { 500 }))
    } else if u < f.fail_rate + f.stall_rate {
        Some(Fault::Stall(Duration::from_secs_f64(f.stall_seconds)))
    } else {
        None
    }
}

/// An OpenAI chat request and the model name it asks for. Unsupported features (streaming,
/// n > 1) are refused, not ignored.
fn parse_request(text: &str) -> Result<(ChatRequest, String)> {
    let v: Value = serde_json::from_str(text).context("the body is not JSON")?;
    let messages: Vec<Message> = serde_json::from_value(v["messages"].clone())
        .context("`messages` must be a list of {role, content} objects with string content")?;
    if messages.is_empty() {
        bail!("`messages` is empty");
    }
    if v["stream"].as_bool() == Some(true) {
        bail!("streaming is not supported");
    }
    if v["n"].as_u64().is_some_and(|n| n != 1) {
        bail!("only n = 1 is supported");
    }
    let defaults = GenerationParams::default();
    let stop = match &v["stop"] {
        Value::Null => Vec::new(),
        Value::String(s) => vec![s.clone()],
        other => serde_json::from_value(other.clone())
            .context("`stop` must be a string or a list of strings")?,
    };
    let params = GenerationParams {
        max_tokens: v["max_completion_tokens"]
            .as_u64()
            .or(v["max_tokens"].as_u64())
            .map_or(defaults.max_tokens, |n| n as usize),
        // OpenAI's default temperature is 1.
        temperature: v["temperature"].as_f64().unwrap_or(1.0),
        top_p: v["top_p"].as_f64().unwrap_or(1.0),
        seed: v["seed"].as_u64().unwrap_or(0),
        stop,
        ..defaults
    };
    params.validate()?;
    let model = v["model"].as_str().unwrap_or_default().to_string();
    Ok((ChatRequest::new(messages, params), model))
}

fn completion_body(model: &str, c: &Completion) -> Value {
    let mut body = json!({
        "id": format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
        "object": "chat.completion",
        "created": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": c.text},
            "finish_reason": match c.finish_reason { FinishReason::Stop => "stop", FinishReason::Length => "length" },
        }],
        "usage": {
            "prompt_tokens": c.prompt_tokens,
            "completion_tokens": c.completion_tokens,
            "total_tokens": c.prompt_tokens + c.completion_tokens,
        },
    });
    if let Some(rag) = &c.rag {
        body["rag"] = rag.clone();
    }
    body
}

fn error_body(message: &str) -> Value {
    json!({"error": {"message": message, "type": "invalid_request_error"}})
}

fn respond(req: Request, status: u16, body: Value) {
    let header = Header::from_bytes("Content-Type", "application/json").expect("static header");
    let _ = req.respond(
        Response::from_string(body.to_string())
            .with_status_code(status)
            .with_header(header),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openai_requests_and_refuses_what_it_cannot_do() {
        let (r, model) = parse_request(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":5,"stop":"\n","temperature":0}"#,
        )
        .unwrap();
        assert_eq!(model, "m");
        assert_eq!(r.params.max_tokens, 5);
        assert_eq!(r.params.stop, vec!["\n".to_string()]);
        assert_eq!(r.params.temperature, 0.0);
        for bad in [
            r#"{"messages":[]}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"stream":true}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"n":2}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"top_p":0}"#,
            "not json",
        ] {
            assert!(parse_request(bad).is_err(), "{bad}");
        }
    }
}
