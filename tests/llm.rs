//! The LLM layer: the decoder against transformers' logits (tiny random Llama fixture), batched
//! decoding equal to one-by-one decoding, stop strings, the GGUF tokenizer against llama.cpp's,
//! SmolLM2's answer, and the OpenAI client against `ragtune serve`'s server, healthy and with
//! injected failures, behind the response cache.

mod common;

use std::sync::Arc;

use ragtune::llm::constrain::CopySpans;
use ragtune::llm::serve::{Faults, ServeOptions, Server};
use ragtune::llm::{
    CachedChat, ChatModel, ChatRequest, FinishReason, GenerationParams, LocalLlm, LocalOptions,
    Message, OpenAiClient, OpenAiOptions,
};

fn tiny() -> LocalLlm {
    LocalLlm::load(
        common::tiny_llama_dir().to_str().unwrap(),
        &LocalOptions {
            max_batch: 4,
            q8_decode: false,
            ..Default::default()
        },
    )
    .unwrap()
}

fn expected() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(common::tiny_llama_dir().join("expected.json")).unwrap())
        .unwrap()
}

fn greedy(max_tokens: usize) -> GenerationParams {
    GenerationParams {
        max_tokens,
        ..Default::default()
    }
}

#[test]
fn decoder_matches_transformers_logits_and_greedy_tokens() {
    let model = tiny();
    let exp = expected();
    let ids: Vec<u32> = serde_json::from_value(exp["ids"].clone()).unwrap();
    assert_eq!(model.encode(exp["text"].as_str().unwrap()).unwrap(), ids);
    let want: Vec<f32> = serde_json::from_value(exp["last_logits"].clone()).unwrap();
    let got = model.next_token_logits(&ids).unwrap();
    let diff = want
        .iter()
        .zip(&got)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff < 1e-4, "max |logit diff| {diff}");

    let greedy_ids: Vec<u32> = serde_json::from_value(exp["greedy"].clone()).unwrap();
    let want_text = model.tokenizer().decode(&greedy_ids, true).unwrap();
    let done = model.generate(&[ids], &[greedy(8)]).unwrap();
    assert_eq!(done[0].text, want_text);
    assert_eq!(done[0].completion_tokens, 8);
    assert_eq!(done[0].finish_reason, FinishReason::Length);
}

#[test]
fn batched_decoding_equals_one_by_one() {
    let model = tiny();
    let prompts: Vec<Vec<u32>> = [
        "The queen",
        "Workers forage for nectar and pollen.",
        "Drones mate",
        "What is",
    ]
    .iter()
    .map(|t| model.encode(t).unwrap())
    .collect();
    // Greedy rows and sampled rows (each with its own seed) side by side in one batch.
    let params: Vec<GenerationParams> = (0..prompts.len())
        .map(|i| GenerationParams {
            max_tokens: 6 + i,
            temperature: if i % 2 == 0 { 0.0 } else { 0.9 },
            top_p: 0.9,
            seed: i as u64,
            ..Default::default()
        })
        .collect();
    let together = model.generate(&prompts, &params).unwrap();
    for (i, p) in prompts.iter().enumerate() {
        let alone = model
            .generate(std::slice::from_ref(p), std::slice::from_ref(&params[i]))
            .unwrap();
        assert_eq!(alone[0].text, together[i].text, "prompt {i}");
        assert_eq!(
            together[i].completion_tokens,
            6 + i,
            "rows finish at their own max_tokens"
        );
    }
    let stats = model.last_stats();
    assert_eq!(stats.prompt_tokens, prompts[3].len());
}

#[test]
fn stop_strings_cut_the_answer() {
    let model = tiny();
    let ids = model.encode("The queen lays eggs").unwrap();
    let full = model
        .generate(std::slice::from_ref(&ids), &[greedy(8)])
        .unwrap()
        .remove(0)
        .text;
    // Stop at the first character of the free continuation that is not at position 0.
    let stop: String = full.chars().skip(2).take(1).collect();
    let cut = model
        .generate(
            &[ids],
            &[GenerationParams {
                stop: vec![stop.clone()],
                ..greedy(8)
            }],
        )
        .unwrap()
        .remove(0);
    assert_eq!(cut.finish_reason, FinishReason::Stop);
    assert_eq!(cut.text, full[..full.find(&stop).unwrap()]);
}

#[test]
fn constrained_spans_copy_a_source_and_leave_free_text_alone() {
    let model = tiny();
    let ids = model.encode("The queen lays eggs").unwrap();
    let run = |temperature: f64, spans: Option<&CopySpans>| {
        model
            .generate(
                std::slice::from_ref(&ids),
                &[GenerationParams {
                    temperature,
                    seed: 7,
                    copy_spans: spans.cloned(),
                    ..greedy(16)
                }],
            )
            .unwrap()
            .remove(0)
            .text
    };
    let source = "eggs are laid in wax cells by the queen of the hive";
    for temperature in [0.0, 0.9] {
        let free = run(temperature, None);
        // The random model's own first word of three letters or more opens the span, so what
        // follows it is constrained (until then decoding, and the sampler's draws, are those of
        // the free run).
        let (start, len) = free
            .match_indices(|c: char| c.is_ascii_alphabetic())
            .map(|(i, _)| i)
            .filter(|&i| i == 0 || !free.as_bytes()[i - 1].is_ascii_alphabetic())
            .map(|i| {
                let len = free[i..]
                    .find(|c: char| !c.is_ascii_alphabetic())
                    .unwrap_or(free.len() - i);
                (i, len)
            })
            .find(|&(_, len)| len >= 3)
            .unwrap();
        let first = free[start..start + len].to_string();
        let after = &free[start + len..];
        let spans = |sources: Vec<String>| CopySpans {
            open: first.clone(),
            close: "]]".into(),
            sources,
            min_words: 0,
            close_before_limit: false,
        };
        // A source that holds the free continuation allows it unchanged.
        let allowing = spans(vec![format!("other words {after} more words")]);
        assert_eq!(run(temperature, Some(&allowing)), free);
        // A source that does not: the span copies it, or is closed.
        let strict = spans(vec![source.into()]);
        let out = run(temperature, Some(&strict));
        assert_ne!(out, free);
        assert!(out.starts_with(&free[..start + len]), "{out:?}");
        // Every span, read as the quote parser reads it (an open marker to the first close
        // marker after it; the last may be open at the token limit), copies the source.
        let mut rest = &out[start..];
        while let Some(at) = rest.find(&first) {
            let after = &rest[at + first.len()..];
            let end = after.find("]]");
            let span = after[..end.unwrap_or(after.len())].trim_end_matches(']');
            let span = span.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(source.contains(&span), "{span:?} in {out:?}");
            rest = &after[end.map_or(after.len(), |e| e + 2)..];
        }
        assert!(strict.checker().allows(&out), "{out:?}");
        // With `close_before_limit`, the span the free run leaves open at the token limit is
        // closed in time: the same text up to the last tokens, then the close marker.
        let closing = CopySpans {
            close_before_limit: true,
            ..allowing.clone()
        };
        let out = run(temperature, Some(&closing));
        assert!(!free.trim_end().ends_with("]]"), "{free:?}");
        assert!(out.ends_with(" ]]"), "{out:?}");
        let body = &out[..out.len() - 3];
        assert!(free.starts_with(body), "{body:?} not a prefix of {free:?}");
        assert!(body.len() > start + len, "{out:?}");
        assert!(closing.checker().allows(&out), "{out:?}");
    }
}

#[test]
fn chat_template_renders_the_models_own_jinja() {
    let model = tiny();
    let text = model
        .render(&[Message::system("Be brief."), Message::user("Hi")])
        .unwrap();
    assert_eq!(
        text,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn missing_model_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), "{}").unwrap();
    let err = format!(
        "{:#}",
        LocalLlm::load(dir.path().to_str().unwrap(), &LocalOptions::default())
            .err()
            .unwrap()
    );
    assert!(err.contains("config.json"), "{err}");
    let err = format!(
        "{:#}",
        LocalLlm::load("/nonexistent/model.gguf", &LocalOptions::default())
            .err()
            .unwrap()
    );
    assert!(err.contains("model.gguf"), "{err}");
}

fn serve(model: Arc<dyn ChatModel>, faults: Faults, log: Option<std::path::PathBuf>) -> Server {
    Server::start(
        model,
        &ServeOptions {
            port: 0,
            faults,
            request_log: log,
            ..Default::default()
        },
    )
    .unwrap()
}

fn client(server: &Server, timeout: f64, retries: u32) -> OpenAiClient {
    OpenAiClient::new(
        "tiny",
        &OpenAiOptions {
            base_url: server.base_url(),
            api_key_env: "RAGTUNE_TEST_KEY_UNSET".into(),
            concurrency: 4,
            timeout_seconds: timeout,
            max_retries: retries,
            backoff_seconds: 0.01,
            max_backoff_seconds: 0.05,
        },
    )
    .unwrap()
}

fn requests(n: usize) -> Vec<ChatRequest> {
    (0..n)
        .map(|i| {
            ChatRequest::new(
                vec![Message::user(format!("Question {i} about the queen"))],
                greedy(5),
            )
        })
        .collect()
}

#[test]
fn client_and_server_agree_with_the_local_model() {
    let local: Arc<dyn ChatModel> = Arc::new(tiny());
    let server = serve(local.clone(), Faults::default(), None);
    let http = client(&server, 30.0, 0);
    let asked = requests(6);
    let over_http = http.chat_batch(&asked);
    let direct = local.chat_batch(&asked);
    for (a, b) in over_http.into_iter().zip(direct) {
        assert_eq!(a.unwrap(), b.unwrap());
    }
    let models: serde_json::Value = ureq::get(&format!("{}/models", server.base_url()))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    assert_eq!(models["data"][0]["id"], local.name());
    // Requests the server cannot honour are refused with the reason, and not retried.
    let bad = ChatRequest::new(Vec::new(), greedy(5));
    let err = format!("{:#}", http.chat(&bad).unwrap_err());
    assert!(
        err.contains("HTTP 400") && err.contains("messages"),
        "{err}"
    );
}

#[test]
fn retries_ride_out_a_server_failing_30_percent() {
    let local: Arc<dyn ChatModel> = Arc::new(tiny());
    let server = serve(
        local.clone(),
        Faults {
            fail_rate: 0.3,
            seed: 3,
            ..Default::default()
        },
        None,
    );
    let http = client(&server, 30.0, 10);
    let asked = requests(30);
    let answers = http.chat_batch(&asked);
    let direct = local.chat_batch(&asked);
    for (a, b) in answers.into_iter().zip(direct) {
        assert_eq!(a.unwrap(), b.unwrap());
    }
    assert!(
        http.attempts() > 30,
        "some requests needed retries: {} attempts",
        http.attempts()
    );

    // Without retries the injected 429/500 come back as errors naming the status. (Under heavy
    // machine load a request has been seen to wait out the client timeout instead; that is an
    // error of its own kind, still named.)
    let strict = client(&server, 30.0, 0);
    let errors: Vec<String> = strict
        .chat_batch(&requests(30))
        .into_iter()
        .filter_map(|a| a.err().map(|e| format!("{e:#}")))
        .collect();
    let injected = errors
        .iter()
        .filter(|e| e.contains("HTTP 429") || e.contains("HTTP 500"))
        .count();
    assert!(injected > 0, "{errors:?}");
    assert!(
        errors
            .iter()
            .all(|e| e.contains("HTTP 429") || e.contains("HTTP 500") || e.contains("timeout")),
        "{errors:?}"
    );
}

#[test]
fn a_stalled_request_times_out_and_is_retried() {
    let local: Arc<dyn ChatModel> = Arc::new(tiny());
    let server = serve(
        local,
        Faults {
            stall_rate: 1.0,
            stall_seconds: 3.0,
            ..Default::default()
        },
        None,
    );
    let http = client(&server, 0.5, 1);
    let started = std::time::Instant::now();
    let err = format!("{:#}", http.chat(&requests(1)[0]).unwrap_err());
    assert!(err.contains("failed after 2 attempts"), "{err}");
    assert!(
        err.to_lowercase().contains("timeout") || err.to_lowercase().contains("timed out"),
        "{err}"
    );
    assert!(
        started.elapsed().as_secs_f64() < 2.5,
        "the client gave up on its own timeout"
    );
}

#[test]
fn cache_repeats_no_answered_request() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("requests.jsonl");
    let server = serve(Arc::new(tiny()), Faults::default(), Some(log.clone()));
    let first = CachedChat::open(
        Arc::new(client(&server, 30.0, 0)),
        &dir.path().join("cache"),
    )
    .unwrap();
    let asked = requests(5);
    let a = first.chat_batch(&asked[..3]);
    assert_eq!(first.counts(), (0, 3));
    drop(first);
    // A new process (new cache object) over the same folder: only the two new requests go out.
    let second = CachedChat::open(
        Arc::new(client(&server, 30.0, 0)),
        &dir.path().join("cache"),
    )
    .unwrap();
    let b = second.chat_batch(&asked);
    assert_eq!(second.counts(), (3, 2));
    for (x, y) in a.into_iter().zip(b) {
        assert_eq!(x.unwrap(), y.unwrap());
    }
    let lines = std::fs::read_to_string(&log).unwrap();
    let keys: Vec<&str> = lines.lines().collect();
    let unique: std::collections::HashSet<&&str> = keys.iter().collect();
    assert_eq!(keys.len(), 5, "the server answered each request once");
    assert_eq!(unique.len(), 5);
    // A cache line cut short by a kill is skipped, not fatal.
    let cache_file = dir.path().join("cache/responses.jsonl");
    let mut text = std::fs::read_to_string(&cache_file).unwrap();
    text.push_str("{\"key\":\"abc\",\"compl");
    std::fs::write(&cache_file, text).unwrap();
    let third = CachedChat::open(
        Arc::new(client(&server, 30.0, 0)),
        &dir.path().join("cache"),
    )
    .unwrap();
    third.chat_batch(&asked);
    assert_eq!(third.counts(), (5, 0));
}

#[test]
fn gguf_tokenizer_matches_llama_cpp_and_smollm2_answers() {
    if common::skip_unless(
        common::smollm2_seeded(),
        "SmolLM2-135M-Instruct GGUF (scripts/seed-models.sh)",
    ) {
        return;
    }
    let model = LocalLlm::load(common::SMOLLM2, &LocalOptions::default()).unwrap();
    let cases: Vec<serde_json::Value> = serde_json::from_slice(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/smollm2_tokens.json"
        ))
        .unwrap(),
    )
    .unwrap();
    for case in cases {
        let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        assert_eq!(model.encode(case["text"].as_str().unwrap()).unwrap(), want);
    }
    let answer = model
        .chat(&ChatRequest::new(
            vec![Message::user("What is the capital of France?")],
            greedy(20),
        ))
        .unwrap();
    assert!(answer.text.contains("Paris"), "{answer:?}");
    assert_eq!(answer.finish_reason, FinishReason::Stop);
}

#[test]
fn decoding_ends_with_the_line_of_a_marker() {
    if common::skip_unless(
        common::smollm2_seeded(),
        "SmolLM2-135M-Instruct GGUF (scripts/seed-models.sh)",
    ) {
        return;
    }
    let model = LocalLlm::load(common::SMOLLM2, &LocalOptions::default()).unwrap();
    let ask = |params: GenerationParams| {
        model
            .chat(&ChatRequest::new(
                vec![Message::user("Name three fruits, one per line.")],
                params,
            ))
            .unwrap()
    };
    let full = ask(greedy(40));
    // The marker: the first line's first word; its line ends where decoding should.
    let first = full.text.trim_start();
    let marker = first.split_whitespace().next().unwrap().to_string();
    let line_end = full.text.find(&marker).unwrap() + first.find('\n').expect("several lines");
    assert!(
        full.text[line_end..].trim().len() > 3,
        "the free answer goes on after its first line: {full:?}"
    );
    let cut = ask(GenerationParams {
        end_line_after: vec![marker.clone()],
        ..greedy(40)
    });
    assert_eq!(cut.text, full.text[..line_end], "marker {marker:?}");
    assert_eq!(cut.finish_reason, FinishReason::Stop);
    assert!(cut.completion_tokens < full.completion_tokens);
    assert_eq!(
        ragtune::llm::marked_line_end(&full.text, &[marker]),
        Some(line_end)
    );
}

#[test]
fn the_api_key_never_reaches_errors() {
    let server = serve(
        Arc::new(tiny()),
        Faults {
            fail_rate: 1.0,
            ..Default::default()
        },
        None,
    );
    std::env::set_var("RAGTUNE_TEST_SECRET_KEY", "sk-test-very-secret-123");
    let http = OpenAiClient::new(
        "tiny",
        &OpenAiOptions {
            base_url: server.base_url(),
            api_key_env: "RAGTUNE_TEST_SECRET_KEY".into(),
            max_retries: 1,
            backoff_seconds: 0.01,
            ..Default::default()
        },
    )
    .unwrap();
    let err = format!(
        "{:#} {:?}",
        http.chat(&requests(1)[0]).unwrap_err(),
        http.chat(&requests(1)[0]).unwrap_err()
    );
    assert!(
        err.contains("HTTP 429") || err.contains("HTTP 500"),
        "{err}"
    );
    assert!(!err.contains("sk-test-very-secret-123"), "{err}");
}
