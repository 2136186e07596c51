"""Drives `ragtune kernel` with a real Jupyter client (jupyter_client, nbclient, nbformat).

Run by tests/kernel.rs, which builds the binary and passes:
  RAGTUNE_BIN       the ragtune executable to install as a kernel
  RAGTUNE_APIARY    recipes/data/apiary (a small BEIR folder)
  RAGTUNE_NOTEBOOK  optional: a notebook to execute end to end (examples/embeddings.ipynb)
  RAGTUNE_PIPELINE_NOTEBOOK  optional: examples/pipeline.ipynb, executed with PIPELINE_QUICK=1 on
                    a 60-passage sample
Exits non-zero on the first failed check, printing what it saw.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from queue import Empty

import nbformat
from jupyter_client.manager import KernelManager
from jupyter_client.session import Session
from nbclient import NotebookClient

BIN = os.environ["RAGTUNE_BIN"]
APIARY = os.environ["RAGTUNE_APIARY"]
prefix = tempfile.mkdtemp(prefix="ragtune-kernelspec-")
subprocess.run([BIN, "kernel", "install", "--prefix", prefix], check=True)
os.environ["JUPYTER_PATH"] = os.path.join(prefix, "share", "jupyter")


def check(cond, what, seen=None):
    if not cond:
        print(f"FAILED: {what}\nseen: {json.dumps(seen, indent=1, default=str)[:4000]}")
        sys.exit(1)
    print(f"ok: {what}")


def run_cell(kc, code, timeout=120):
    """Executes code; returns (reply content, iopub messages of this request)."""
    msg_id = kc.execute(code)
    outputs = []
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        outputs.append(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    reply = kc.get_shell_msg(timeout=timeout)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kc.get_shell_msg(timeout=timeout)
    return reply["content"], outputs


def of_type(outputs, kind):
    return [m["content"] for m in outputs if m["msg_type"] == kind]


km = KernelManager(kernel_name="ragtune")
km.start_kernel()
kc = km.client()
kc.start_channels()
kc.wait_for_ready(timeout=60)

# kernel_info
kc.kernel_info()
info = kc.get_shell_msg(timeout=10)["content"]
check(info["language_info"]["name"] == "rhai" and info["protocol_version"] == "5.3", "kernel_info", info)

# A value, its execution count, busy/idle around it.
reply, out = run_cell(kc, "let x = 40 + 2;\nx")
states = [c["execution_state"] for c in of_type(out, "status")]
results = of_type(out, "execute_result")
check(reply["status"] == "ok" and states[0] == "busy" and states[-1] == "idle", "busy then idle", out)
check(results and results[0]["data"]["text/plain"] == "42", "execute_result text/plain", out)
count = reply["execution_count"]
reply, _ = run_cell(kc, "x * 2")
check(reply["execution_count"] == count + 1, "execution count increments", reply)

# Streams while running.
reply, out = run_cell(kc, 'print("hello"); print("world");')
text = "".join(c["text"] for c in of_type(out, "stream") if c["name"] == "stdout")
check(text == "hello\nworld\n", "print streams to stdout", out)

# A DataFrame as an HTML table with shape and dtypes.
reply, out = run_cell(kc, f'let data = load_beir("{APIARY}", "test");\ndata.corpus.head(3)')
html = of_type(out, "execute_result")[0]["data"].get("text/html", "")
check("<table" in html and "shape: (3, 4)" in html and "<i>str</i>" in html, "frame as an HTML table", html)

# A chart: display_data with plotly JSON and an HTML fallback.
reply, out = run_cell(kc, 'line_chart("demo", [1, 2, 3], #{a: [1.0, 4.0, 9.0]})')
shown = of_type(out, "display_data")
check(shown and "application/vnd.plotly.v1+json" in shown[0]["data"], "chart as plotly display_data", out)
check("Plotly.newPlot" in shown[0]["data"].get("text/html", ""), "chart HTML fallback", shown)
figure = shown[0]["data"]["application/vnd.plotly.v1+json"]
check(figure["data"][0]["y"] == [1.0, 4.0, 9.0], "plotly figure carries the data", figure)

# display() mid-cell.
reply, out = run_cell(kc, "display(data.queries.head(2)); 7")
check(len(of_type(out, "display_data")) == 1 and of_type(out, "execute_result"), "display() then a value", out)

# An error names the cell and line, and the session lives on.
reply, out = run_cell(kc, "let a = 1;\nlet b = a + nope;")
errors = of_type(out, "error")
check(reply["status"] == "error" and errors, "error reply", out)
tb = "\n".join(errors[0]["traceback"])
check(f"cell[{reply['execution_count']}]:2:" in tb and "nope" in tb, "traceback names the line", errors)
reply, out = run_cell(kc, "x")
check(of_type(out, "execute_result")[0]["data"]["text/plain"] == "42", "variables survive an error", out)

# complete, inspect, is_complete.
kc.complete("let e = load_enc", 16)
c = kc.get_shell_msg(timeout=10)["content"]
check("load_encoder" in c["matches"] and c["cursor_start"] == 8, "complete_request", c)
code = 'mine(e, p, data, #{range_m'
kc.complete(code, len(code))
c = kc.get_shell_msg(timeout=10)["content"]
check(c["matches"] == ["range_max", "range_min"], "completes option keys", c)
kc.inspect("mine", 2)
c = kc.get_shell_msg(timeout=10)["content"]
check(c["found"] and "Example" in c["data"]["text/plain"], "inspect_request gives the doc", c)
kc.is_complete("let m = #{ a: 1,")
c = kc.get_shell_msg(timeout=10)["content"]
check(c["status"] == "incomplete", "is_complete_request: incomplete", c)
kc.is_complete("let m = #{ a: 1 };")
check(kc.get_shell_msg(timeout=10)["content"]["status"] == "complete", "is_complete_request: complete")

# Interrupt a long cell; the kernel keeps its session.
msg_id = kc.execute("let n = 0;\nloop { n += 1; }")
time.sleep(1.5)
km.interrupt_kernel()
reply = kc.get_shell_msg(timeout=30)
while reply["parent_header"].get("msg_id") != msg_id:
    reply = kc.get_shell_msg(timeout=30)
check(reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt", "interrupt stops the cell", reply["content"])
reply, out = run_cell(kc, "x + 1")
check(of_type(out, "execute_result")[0]["data"]["text/plain"] == "43", "session alive after interrupt", out)

# A message signed with the wrong key is ignored; the kernel keeps serving.
forger = Session(key=b"not-the-key", username="mallory")
forger.send(kc.shell_channel.socket, "execute_request",
            {"code": "let forged = 1;", "silent": False, "store_history": True,
             "user_expressions": {}, "allow_stdin": False, "stop_on_error": True})
try:
    msg = kc.get_shell_msg(timeout=3)
    check(False, "no reply to a forged message", msg)
except Empty:
    print("ok: no reply to a forged message")
reply, out = run_cell(kc, "forged")
check(reply["status"] == "error", "the forged cell never ran", out)
reply, out = run_cell(kc, "x")
check(reply["status"] == "ok", "still serving after a forged message", out)

# A notebook with an error cell, through nbclient.
nb = nbformat.v4.new_notebook()
nb.metadata["kernelspec"] = {"name": "ragtune", "display_name": "ragtune", "language": "rhai"}
nb.cells = [
    nbformat.v4.new_code_cell(f'let d = load_beir("{APIARY}", "test");\nd.qrels.head(2)'),
    nbformat.v4.new_code_cell('print("before");\nlet broken = d.nothing_here();'),
]
NotebookClient(nb, timeout=120, kernel_name="ragtune", allow_errors=True).execute()
first = nb.cells[0].outputs[0]
check(first["output_type"] == "execute_result" and "<table" in first["data"]["text/html"], "notebook: table output", first)
err = [o for o in nb.cells[1].outputs if o["output_type"] == "error"]
check(err and any(":2:" in line for line in err[0]["traceback"]), "notebook: error traceback names line 2", nb.cells[1].outputs)

# The example notebook end to end, when its data is there.
example = os.environ.get("RAGTUNE_NOTEBOOK")
if example:
    nb = nbformat.read(example, as_version=4)
    started = time.time()
    workdir = tempfile.mkdtemp(prefix="ragtune-notebook-")
    NotebookClient(nb, timeout=1200, kernel_name="ragtune",
                   resources={"metadata": {"path": workdir}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    mimes = {m for o in outputs for m in o.get("data", {})}
    check("text/html" in mimes and "application/vnd.plotly.v1+json" in mimes, f"example notebook ran ({time.time() - started:.0f} s): tables and plots", sorted(mimes))
    out_path = os.environ.get("RAGTUNE_NOTEBOOK_OUT")
    if out_path:
        nbformat.write(nb, out_path)

# The pipeline notebook, quick settings, on a sample of the bundled passages.
pipeline = os.environ.get("RAGTUNE_PIPELINE_NOTEBOOK")
if pipeline:
    nb = nbformat.read(pipeline, as_version=4)
    started = time.time()
    workdir = tempfile.mkdtemp(prefix="ragtune-pipeline-")
    with open(os.path.join(APIARY, "corpus.jsonl")) as f:
        sample = [next(f) for _ in range(60)]
    with open(os.path.join(workdir, "corpus.jsonl"), "w") as f:
        f.writelines(sample)
    os.environ.update({"PIPELINE_QUICK": "1", "PIPELINE_DOCS": os.path.join(workdir, "corpus.jsonl"),
                       "PIPELINE_EVAL": APIARY, "PIPELINE_OUTPUT": os.path.join(workdir, "run")})
    NotebookClient(nb, timeout=1200, kernel_name="ragtune",
                   resources={"metadata": {"path": workdir}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    mimes = {m for o in outputs for m in o.get("data", {})}
    check("text/html" in mimes and "application/vnd.plotly.v1+json" in mimes,
          f"pipeline notebook ran ({time.time() - started:.0f} s): tables and plots", sorted(mimes))
    html = " ".join(o.get("data", {}).get("text/html", "") for o in outputs)
    check("recall@20" in html and "precision@5" in html, "pipeline notebook: every comparison row shown", html[:2000])
    check("recommendation" in " ".join(o.get("data", {}).get("text/plain", "") for o in outputs) or "Diagnosis" in html,
          "pipeline notebook: a diagnosis", html[-2000:])

# Clean shutdown: the kernel answers and exits by itself with status 0.
kc.shutdown()  # on the control channel, as jupyter_client >= 7 sends it
reply = kc.control_channel.get_msg(timeout=10)
while reply["msg_type"] != "shutdown_reply":
    reply = kc.control_channel.get_msg(timeout=10)
process = km.provisioner.process
deadline = time.time() + 10
while process.poll() is None and time.time() < deadline:
    time.sleep(0.1)
check(process.poll() == 0, "kernel exits cleanly after shutdown_request", process.poll())
kc.stop_channels()
print("all kernel checks passed")
