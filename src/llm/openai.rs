//! A client for any OpenAI-compatible `/chat/completions` endpoint (OpenAI, vLLM, TGI, Ollama,
//! llama.cpp's server, `ragtune serve`): bounded concurrency, a timeout per request, and retries
//! with exponential backoff and full jitter on 429, 5xx, timeouts and connection errors. The API
//! key is read from an environment variable and goes only into the Authorization header.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{ChatModel, ChatRequest, Completion, FinishReason, OnAnswer};
use crate::rng::Rng;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenAiOptions {
    /// The API root, e.g. `https://api.openai.com/v1` or `http://127.0.0.1:8080/v1`.
    pub base_url: String,
    /// The environment variable holding the API key (none is sent when it is unset).
    pub api_key_env: String,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Seconds before a request is abandoned (and retried).
    pub timeout_seconds: f64,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The first retry waits up to this long; each further one twice as long, up to `max_backoff_seconds`.
    pub backoff_seconds: f64,
    pub max_backoff_seconds: f64,
}

impl Default for OpenAiOptions {
    fn default() -> Self {
        Self {
            base_url: "https://api.openai.com/v1".into(),
            api_key_env: "OPENAI_API_KEY".into(),
            concurrency: 8,
            timeout_seconds: 120.0,
            max_retries: 6,
            backoff_seconds: 0.5,
            max_backoff_seconds: 30.0,
        }
    }
}

pub struct OpenAiClient {
    model: String,
    url: String,
    api_key: Option<String>,
    agent: ureq::Agent,
    options: OpenAiOptions,
    /// Requests sent, retries included (for reports and tests).
    attempts: AtomicUsize,
}

impl OpenAiClient {
    pub fn new(model: &str, options: &OpenAiOptions) -> Result<Self> {
        if options.concurrency == 0 {
            bail!("concurrency must be at least 1");
        }
        if options.timeout_seconds.is_nan() || options.timeout_seconds <= 0.0 {
            bail!("timeout_seconds must be positive");
        }
        let base = options.base_url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("base_url `{base}` must start with http:// or https://");
        }
        let api_key = std::env::var(&options.api_key_env)
            .ok()
            .filter(|k| !k.is_empty());
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs_f64(options.timeout_seconds)))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Self {
            model: model.to_string(),
            url: format!("{base}/chat/completions"),
            api_key,
            agent,
            options: options.clone(),
            attempts: AtomicUsize::new(0),
        })
    }

    /// HTTP requests sent so far, retries included.
    pub fn attempts(&self) -> usize {
        self.attempts.load(Ordering::Relaxed)
    }

    fn body(&self, request: &ChatRequest) -> Value {
        let p = &request.params;
        let mut body = json!({
            "model": self.model,
            "messages": request.messages,
            "max_tokens": p.max_tokens,
            "temperature": p.temperature,
            "top_p": p.top_p,
            "seed": p.seed,
        });
        if !p.stop.is_empty() {
            body["stop"] = json!(p.stop);
        }
        body
    }

    /// One request with its retries.
    fn send(&self, request: &ChatRequest, rng: &mut Rng) -> Result<Completion> {
        if request.params.copy_spans.is_some() {
            bail!(
                "{}: constrained quoting (copy_spans) needs a local model; a server cannot be \
                 steered token by token",
                self.model
            );
        }
        let body = self.body(request);
        let mut attempt = 0;
        loop {
            crate::interrupt::check()?;
            self.attempts.fetch_add(1, Ordering::Relaxed);
            let failure = match self.attempt(&body) {
                Ok(c) => return Ok(c),
                Err(f) => f,
            };
            if !failure.retryable || attempt >= self.options.max_retries {
                let tries = attempt + 1;
                return Err(failure.error.context(format!(
                    "{} (model `{}`) failed after {tries} attempt{}",
                    self.url,
                    self.model,
                    if tries == 1 { "" } else { "s" }
                )));
            }
            // Full jitter: a random wait up to the exponential bound, never shorter than the
            // server's Retry-After.
            let bound = (self.options.backoff_seconds * 2f64.powi(attempt as i32))
                .min(self.options.max_backoff_seconds);
            let wait = (rng.unit() * bound).max(failure.retry_after.unwrap_or(0.0));
            std::thread::sleep(Duration::from_secs_f64(wait));
            attempt += 1;
        }
    }

    fn attempt(&self, body: &Value) -> std::result::Result<Completion, Failure> {
        let mut req = self.agent.post(&self.url);
        if let Some(key) = &self.api_key {
            req = req.header("Authorization", &format!("Bearer {key}"));
        }
        let mut response = req.send_json(body).map_err(|e| Failure {
            retryable: matches!(
                e,
                ureq::Error::Io(_)
                    | ureq::Error::Timeout(_)
                    | ureq::Error::HostNotFound
                    | ureq::Error::ConnectionFailed
                    | ureq::Error::Protocol(_)
            ),
            retry_after: None,
            error: anyhow!("{e}"),
        })?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<f64>().ok());
        let text = response.body_mut().read_to_string().map_err(|e| Failure {
            retryable: true,
            retry_after: None,
            error: anyhow!("reading the response: {e}"),
        })?;
        if status != 200 {
            let detail = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| text.chars().take(200).collect());
            let hint = if status == 401 {
                format!(" (set the API key in ${})", self.options.api_key_env)
            } else {
                String::new()
            };
            return Err(Failure {
                retryable: status == 429 || status >= 500,
                retry_after,
                error: anyhow!("HTTP {status}: {detail}{hint}"),
            });
        }
        parse_completion(&text).map_err(|error| Failure {
            retryable: false,
            retry_after: None,
            error,
        })
    }
}

struct Failure {
    retryable: bool,
    retry_after: Option<f64>,
    error: anyhow::Error,
}

fn parse_completion(text: &str) -> Result<Completion> {
    let v: Value = serde_json::from_str(text).context("the server's answer is not JSON")?;
    let choice = &v["choices"][0];
    let content = choice["message"]["content"]
        .as_str()
        .context("the server's answer has no choices[0].message.content")?;
    Ok(Completion {
        text: content.to_string(),
        finish_reason: match choice["finish_reason"].as_str() {
            Some("length") => FinishReason::Length,
            _ => FinishReason::Stop,
        },
        prompt_tokens: v["usage"]["prompt_tokens"].as_u64().unwrap_or(0) as usize,
        completion_tokens: v["usage"]["completion_tokens"].as_u64().unwrap_or(0) as usize,
        rag: v.get("rag").cloned(),
    })
}

impl ChatModel for OpenAiClient {
    fn name(&self) -> &str {
        &self.model
    }

    fn chat_each(
        &self,
        requests: &[ChatRequest],
        on_answer: &OnAnswer<'_>,
    ) -> Vec<Result<Completion>> {
        let next = AtomicUsize::new(0);
        let answers: Mutex<Vec<Option<Result<Completion>>>> =
            Mutex::new((0..requests.len()).map(|_| None).collect());
        let workers = self.options.concurrency.min(requests.len());
        std::thread::scope(|s| {
            for w in 0..workers {
                let (next, answers) = (&next, &answers);
                s.spawn(move || {
                    let seed = w as u64
                        ^ std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_nanos() as u64)
                            .unwrap_or(0);
                    let mut rng = Rng::new(seed);
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= requests.len() {
                            break;
                        }
                        let answer = self.send(&requests[i], &mut rng);
                        on_answer(i, &answer);
                        answers.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(answer);
                    }
                });
            }
        });
        answers
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .into_iter()
            .map(|a| a.expect("every request answered"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_openai_answer() {
        let c = parse_completion(
            r#"{"choices":[{"message":{"role":"assistant","content":"Paris."},"finish_reason":"length"}],
                "usage":{"prompt_tokens":12,"completion_tokens":3}}"#,
        )
        .unwrap();
        assert_eq!(c.text, "Paris.");
        assert_eq!(c.finish_reason, FinishReason::Length);
        assert_eq!((c.prompt_tokens, c.completion_tokens), (12, 3));
        assert!(parse_completion(r#"{"choices":[]}"#).is_err());
    }

    #[test]
    fn refuses_a_url_without_scheme() {
        let opts = OpenAiOptions {
            base_url: "localhost:8080/v1".into(),
            ..Default::default()
        };
        let err = OpenAiClient::new("m", &opts).err().unwrap().to_string();
        assert!(err.contains("http://"), "{err}");
    }
}
