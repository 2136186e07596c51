//! `ragtune kernel`: a Jupyter kernel (messaging protocol 5.3) on a [`Session`].
//!
//! Sockets and signing come from `jupyter-zmq-client` (pure-Rust ZeroMQ, HMAC-SHA256 with the
//! connection file's key; a message whose signature does not verify is dropped and logged, and
//! the kernel keeps serving). Message types come from `jupyter-protocol`. Shell requests run one
//! at a time, cells on a blocking thread, while control (interrupt, shutdown) and heartbeat stay
//! responsive. Output streams as it happens: `print` as stdout, progress as stderr, `display(x)`
//! as display_data; a cell's value becomes an execute_result (charts a plotly display_data).

pub mod install;

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use jupyter_protocol::{
    CodeMirrorMode, CommInfoReply, CompleteReply, ConnectionInfo, DisplayData, ErrorOutput,
    ExecuteInput, ExecuteReply, ExecuteResult, ExecutionCount, HistoryReply, InspectReply,
    InterruptReply, IsCompleteReply, JupyterMessage, JupyterMessageContent, KernelInfoReply,
    LanguageInfo, Media, ReplyError, ReplyStatus, ShutdownReply, Status, StreamContent,
};
use jupyter_zmq_client::{
    create_kernel_control_connection, create_kernel_heartbeat_connection,
    create_kernel_iopub_connection, create_kernel_shell_connection, create_kernel_stdin_connection,
};
use tokio::sync::mpsc::UnboundedSender;

use crate::render::Rich;
use crate::script::values::rich;
use crate::script::{Completeness, Output, ScriptError, Session};

/// Reads the connection file Jupyter wrote and serves until a shutdown request.
pub fn run(connection_file: &Path) -> Result<()> {
    let text = std::fs::read_to_string(connection_file)
        .with_context(|| format!("cannot read connection file {}", connection_file.display()))?;
    let info: ConnectionInfo = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not a Jupyter connection file",
            connection_file.display()
        )
    })?;
    if info.signature_scheme != "hmac-sha256" && !info.key.is_empty() {
        anyhow::bail!(
            "{}: signature scheme `{}` is not supported (hmac-sha256 is)",
            connection_file.display(),
            info.signature_scheme
        );
    }
    // Jupyter's default interrupt is SIGINT; the kernelspec asks for interrupt_request messages,
    // and both raise the same flag.
    crate::interrupt::catch_sigint();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the kernel's event loop")?;
    runtime.block_on(serve(info))
}

/// Publishes on iopub, children of whatever request is running.
struct IoPub {
    tx: UnboundedSender<JupyterMessage>,
    parent: Mutex<Option<JupyterMessage>>,
}

impl IoPub {
    fn send(&self, content: impl Into<JupyterMessageContent>) {
        let parent = self.parent.lock().unwrap_or_else(|e| e.into_inner());
        let message = JupyterMessage::new(content, parent.as_ref()).with_zmq_identities(Vec::new());
        // The receiver lives as long as the kernel; a failed send means it is shutting down.
        let _ = self.tx.send(message);
    }

    fn reply_to(&self, parent: &JupyterMessage, content: impl Into<JupyterMessageContent>) {
        let message = JupyterMessage::new(content, Some(parent)).with_zmq_identities(Vec::new());
        let _ = self.tx.send(message);
    }
}

impl Output for IoPub {
    fn print(&self, text: &str) {
        self.send(StreamContent::stdout(&format!("{text}\n")));
    }

    fn display(&self, value: &Rich) {
        self.send(DisplayData::new(media(value)));
    }
}

fn media(value: &Rich) -> Media {
    serde_json::from_value(serde_json::Value::Object(value.mime_bundle())).unwrap_or_default()
}

struct Kernel {
    session: Arc<Mutex<Session>>,
    iopub: Arc<IoPub>,
    execution_count: usize,
}

async fn serve(info: ConnectionInfo) -> Result<()> {
    let session_id = uuid::Uuid::new_v4().to_string();
    let mut iopub_socket = create_kernel_iopub_connection(&info, &session_id).await?;
    let mut shell = create_kernel_shell_connection(&info, &session_id).await?;
    let mut control = create_kernel_control_connection(&info, &session_id).await?;
    // Bound so clients can connect; the kernel never asks for input.
    let _stdin = create_kernel_stdin_connection(&info, &session_id).await?;
    let mut heartbeat = create_kernel_heartbeat_connection(&info).await?;

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<JupyterMessage>();
    tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            if let Err(e) = iopub_socket.send(message).await {
                eprintln!("ragtune kernel: cannot publish on iopub: {e}");
            }
        }
    });
    tokio::spawn(async move { while heartbeat.single_heartbeat().await.is_ok() {} });

    let iopub = Arc::new(IoPub {
        tx,
        parent: Mutex::new(None),
    });
    let progress_to = iopub.clone();
    // Notebook front ends treat "\r" as "back to the start of the line": intermediate lines
    // overwrite each other and only the final one stays.
    crate::progress::set_sink(Some(Arc::new(move |line: &str, last: bool| {
        let text = if last {
            format!("\r{line}\n")
        } else {
            format!("\r{line}")
        };
        progress_to.send(StreamContent::stderr(&text));
    })));
    let session = Session::with_output(iopub.clone());
    let mut kernel = Kernel {
        session: Arc::new(Mutex::new(session)),
        iopub: iopub.clone(),
        execution_count: 0,
    };
    iopub.send(Status::starting());

    let (shutdown_tx, mut shutdown_rx) = tokio::sync::watch::channel(false);
    let control_iopub = iopub.clone();
    let control_shutdown = shutdown_tx.clone();
    tokio::spawn(async move {
        loop {
            let request = match control.read().await {
                Ok(m) => m,
                Err(e) => {
                    eprintln!(
                        "ragtune kernel: dropped a control message: {}",
                        why_dropped(&e)
                    );
                    continue;
                }
            };
            let reply: JupyterMessageContent = match &request.content {
                JupyterMessageContent::InterruptRequest(_) => {
                    crate::interrupt::request();
                    InterruptReply::new().into()
                }
                JupyterMessageContent::ShutdownRequest(r) => ShutdownReply {
                    restart: r.restart,
                    ..Default::default()
                }
                .into(),
                JupyterMessageContent::KernelInfoRequest(_) => kernel_info().into(),
                other => {
                    eprintln!(
                        "ragtune kernel: ignoring control message {}",
                        other.message_type()
                    );
                    continue;
                }
            };
            let shutdown = matches!(reply, JupyterMessageContent::ShutdownReply(_));
            control_iopub.reply_to(&request, Status::busy());
            if let Err(e) = control
                .send(JupyterMessage::new(reply, Some(&request)))
                .await
            {
                eprintln!("ragtune kernel: cannot reply on control: {e}");
            }
            control_iopub.reply_to(&request, Status::idle());
            if shutdown {
                crate::interrupt::request();
                let _ = control_shutdown.send(true);
                return;
            }
        }
    });

    loop {
        let request = tokio::select! {
            m = shell.read() => m,
            _ = shutdown_rx.changed() => break,
        };
        let request = match request {
            Ok(m) => m,
            Err(e) => {
                eprintln!(
                    "ragtune kernel: dropped a shell message: {}",
                    why_dropped(&e)
                );
                continue;
            }
        };
        kernel.iopub.reply_to(&request, Status::busy());
        let reply = kernel.handle(&request).await;
        let shutdown = matches!(reply, Some(JupyterMessageContent::ShutdownReply(_)));
        if let Some(reply) = reply {
            if let Err(e) = shell.send(JupyterMessage::new(reply, Some(&request))).await {
                eprintln!("ragtune kernel: cannot reply on shell: {e}");
            }
        }
        kernel.iopub.reply_to(&request, Status::idle());
        if shutdown {
            break;
        }
    }
    crate::progress::set_sink(None);
    // Let the last iopub messages (idle) leave before the process ends.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    Ok(())
}

/// Messages that fail to read are dropped unanswered; a bad signature is the case worth naming.
fn why_dropped(e: &jupyter_zmq_client::RuntimeError) -> String {
    match e {
        jupyter_zmq_client::RuntimeError::VerifyError(_) => {
            "its signature does not match the connection file's key".into()
        }
        other => other.to_string(),
    }
}

fn kernel_info() -> KernelInfoReply {
    KernelInfoReply {
        status: ReplyStatus::Ok,
        protocol_version: "5.3".into(),
        implementation: "ragtune".into(),
        implementation_version: env!("CARGO_PKG_VERSION").into(),
        language_info: LanguageInfo {
            name: "rhai".into(),
            version: "1.27".into(),
            mimetype: Some("text/x-rhai".into()),
            file_extension: Some(".rhai".into()),
            pygments_lexer: Some("rust".into()),
            codemirror_mode: Some(CodeMirrorMode::Simple("rust".into())),
            nbconvert_exporter: None,
        },
        banner: "ragtune: fine-tune every stage of a RAG pipeline. help() lists the bindings."
            .into(),
        help_links: Vec::new(),
        debugger: false,
        error: None,
    }
}

/// Jupyter counts cursor positions in unicode characters; Rust strings index bytes.
fn byte_offset(code: &str, chars: usize) -> usize {
    code.char_indices()
        .nth(chars)
        .map_or(code.len(), |(i, _)| i)
}

fn char_offset(code: &str, bytes: usize) -> usize {
    code[..bytes.min(code.len())].chars().count()
}

fn error_reply(count: usize, e: &ScriptError) -> (ErrorOutput, ExecuteReply) {
    let ename = if e.interrupted {
        "KeyboardInterrupt"
    } else {
        "ScriptError"
    };
    let traceback: Vec<String> = e.to_string().lines().map(str::to_string).collect();
    let output = ErrorOutput {
        ename: ename.into(),
        evalue: e.message.clone(),
        traceback: traceback.clone(),
    };
    let reply = ExecuteReply {
        status: ReplyStatus::Error,
        execution_count: ExecutionCount::new(count),
        error: Some(Box::new(ReplyError {
            ename: ename.into(),
            evalue: e.message.clone(),
            traceback,
        })),
        ..Default::default()
    };
    (output, reply)
}

impl Kernel {
    /// Handles one shell request; `None` for messages that get no reply.
    async fn handle(&mut self, request: &JupyterMessage) -> Option<JupyterMessageContent> {
        Some(match &request.content {
            JupyterMessageContent::KernelInfoRequest(_) => kernel_info().into(),
            JupyterMessageContent::ExecuteRequest(r) => {
                let silent = r.silent;
                if !silent && r.store_history {
                    self.execution_count += 1;
                }
                let count = self.execution_count;
                self.iopub.reply_to(
                    request,
                    ExecuteInput {
                        code: r.code.clone(),
                        execution_count: ExecutionCount::new(count),
                    },
                );
                *self.iopub.parent.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(request.clone());
                let session = self.session.clone();
                let code = r.code.clone();
                let outcome = tokio::task::spawn_blocking(move || {
                    let mut session = session.lock().unwrap_or_else(|e| e.into_inner());
                    session
                        .eval(&code, &format!("cell[{count}]"))
                        .map(|value| (!value.is_unit()).then(|| rich(&value)))
                })
                .await;
                let reply = match outcome {
                    Ok(Ok(value)) => {
                        if let (Some(value), false) = (value, silent) {
                            if value.plotly.is_some() {
                                self.iopub
                                    .reply_to(request, DisplayData::new(media(&value)));
                            } else {
                                self.iopub.reply_to(
                                    request,
                                    ExecuteResult::new(ExecutionCount::new(count), media(&value)),
                                );
                            }
                        }
                        ExecuteReply {
                            execution_count: ExecutionCount::new(count),
                            ..Default::default()
                        }
                    }
                    Ok(Err(e)) => {
                        let (output, reply) = error_reply(count, &e);
                        self.iopub.reply_to(request, output);
                        reply
                    }
                    Err(panic) => {
                        let e = ScriptError {
                            origin: format!("cell[{count}]"),
                            line: None,
                            column: None,
                            message: format!("internal error: {panic}"),
                            source_line: None,
                            interrupted: false,
                        };
                        let (output, reply) = error_reply(count, &e);
                        self.iopub.reply_to(request, output);
                        reply
                    }
                };
                *self.iopub.parent.lock().unwrap_or_else(|e| e.into_inner()) = None;
                reply.into()
            }
            JupyterMessageContent::CompleteRequest(r) => {
                let cursor = byte_offset(&r.code, r.cursor_pos);
                let c = self.lock_session().complete(&r.code, cursor);
                CompleteReply {
                    matches: c.matches,
                    cursor_start: char_offset(&r.code, c.start),
                    cursor_end: char_offset(&r.code, c.end),
                    ..Default::default()
                }
                .into()
            }
            JupyterMessageContent::InspectRequest(r) => {
                let cursor = byte_offset(&r.code, r.cursor_pos);
                match self.lock_session().inspect(&r.code, cursor) {
                    Some(doc) => InspectReply {
                        found: true,
                        data: media(&Rich::text(doc)),
                        ..Default::default()
                    },
                    None => InspectReply::default(),
                }
                .into()
            }
            JupyterMessageContent::IsCompleteRequest(r) => {
                match self.lock_session().is_complete(&r.code) {
                    Completeness::Complete => IsCompleteReply::complete(),
                    Completeness::Incomplete { indent } => IsCompleteReply::incomplete(indent),
                    Completeness::Invalid => IsCompleteReply::invalid(),
                }
                .into()
            }
            JupyterMessageContent::HistoryRequest(_) => HistoryReply::default().into(),
            JupyterMessageContent::CommInfoRequest(_) => CommInfoReply::default().into(),
            JupyterMessageContent::ShutdownRequest(r) => ShutdownReply {
                restart: r.restart,
                ..Default::default()
            }
            .into(),
            other => {
                eprintln!(
                    "ragtune kernel: ignoring shell message {}",
                    other.message_type()
                );
                return None;
            }
        })
    }

    fn lock_session(&self) -> std::sync::MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(|e| e.into_inner())
    }
}
