"""Real-ComfyUI tier: start ComfyUI 0.3.64 with the pack linked in and run every example workflow over /prompt.

Skipped unless COMFYUI_DIR points at a ComfyUI source tree (e.g. /tmp/comfyui). The server runs from a venv
(COMFYUI_VENV, default /tmp/tora-comfy-venv; built on first use by tests/comfy_venv.py with the CPU torch pin) in its own base
directory, so the ComfyUI tree is not modified. Each UI-format workflow is converted to the API format with the
server's own /object_info, the real model files are swapped for tiny ones written into the base directory (the
tiny workflow, "Tiny Tora, CPU, no download", runs as saved, with the model bundled in the pack, and must
finish within a minute), and the saved videos are checked frame by frame. Takes about a minute once the venv exists.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest

from tests.comfy_venv import build_server_venv, ensure_venv
from tests.test_nodes import PACK_ROOT
from tests.test_nodes_e2e import TOKENS, write_start_image, write_tiny_models

COMFY = os.environ.get("COMFYUI_DIR")
pytestmark = pytest.mark.skipif(
    not COMFY, reason="COMFYUI_DIR is not set (path of a ComfyUI 0.3.64 source tree)"
)
VENV = Path(os.environ.get("COMFYUI_VENV", "/tmp/tora-comfy-venv"))
PACK_LINK_NAME = "any-folder-name_tora"  # the pack must load under whatever folder name it is cloned into
OUR_IDS = ("LoadToraModel", "TrajectoryCanvas", "TrajectoryToMotionLatent", "ToraSampler", "MotionVAEDecode")
WIDTH, HEIGHT, FRAMES, STEPS = 96, 64, 9, 2
# Runs as saved (the bundled tiny Tora at its own 96x64, 17 frames, 20 steps), within the minute on a CPU.
TINY_WORKFLOW, TINY_FRAMES, TINY_MAX_SECONDS = "Tiny Tora, CPU, no download", 17, 60.0
PRESET_WORKFLOW = PACK_ROOT / "example_workflows" / "Tora text to video, path file.json"
TINY_SAVED_SCALE = 4  # the tiny workflow saves its 96x64 frames through ImageScaleBy (nearest-exact, 4x)
SIZE_NODES = ("TrajectoryCanvas", "TrajectoryToMotionLatent", "ToraSampler")
WIDGET_KINDS = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
# ComfyUI imports torchvision at start-up; the CPU torch pin has no matching torchvision wheel here, so an
# import-only stand-in is put on PYTHONPATH (any real use raises).
TORCHVISION_SHIM = '''"""Import-only torchvision stand-in for a CPU test server; using anything raises RuntimeError."""
import importlib.abc, importlib.machinery, sys, types


class _Missing:
    def __init__(self, name):
        self._name = name

    def __getattr__(self, key):
        if key.startswith("__"):
            raise AttributeError(key)
        return _Missing(self._name + "." + key)

    def __call__(self, *args, **kwargs):
        raise RuntimeError(self._name + ": torchvision is not installed in this test venv")


class _Module(types.ModuleType):
    def __getattr__(self, key):
        if key.startswith("__"):
            raise AttributeError(key)
        return _Missing(self.__name__ + "." + key)


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _Module(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


__version__ = "0.0.0+test-shim"
sys.meta_path.insert(0, _Finder())
sys.modules[__name__].__class__ = _Module
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, base: Path):
        self.base = base
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = base / "server.log"
        self.process = None

    def start(self, python: Path, extra_args: tuple[str, ...] = ()) -> None:
        shims = self.base / "shims" / "torchvision"
        shims.mkdir(parents=True)
        (shims / "__init__.py").write_text(TORCHVISION_SHIM)
        env = {**os.environ, "PYTHONPATH": str(shims.parent)}
        command = [str(python), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port)]
        command += [
            "--base-directory",
            str(self.base),
            "--disable-auto-launch",
            "--preview-method",
            "latent2rgb",
            "--extra-model-paths-config",
            str(self.base / "extra_model_paths.yaml"),
            *extra_args,
        ]
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(command, cwd=COMFY, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"ComfyUI exited early:\n{self.log.read_text()[-4000:]}")
            try:
                self.get("/system_stats")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        pytest.fail("ComfyUI did not answer /system_stats within 180 s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            data = response.read()
        return json.loads(data) if response.headers.get_content_type() == "application/json" else data

    def post(self, path: str, body: dict):
        request = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"{}")

    def run(self, prompt: dict, timeout: float = 600) -> dict:
        status, body = self.post("/prompt", {"prompt": prompt, "client_id": "tora-test"})
        assert status == 200, body
        return self.wait(body["prompt_id"], timeout)

    def wait(self, prompt_id: str, timeout: float = 600) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history:  # written once execution has finished (success, error or interrupt)
                return history[prompt_id]
            time.sleep(0.5)
        pytest.fail(f"prompt {prompt_id} did not finish in {timeout} s\n{self.log.read_text()[-3000:]}")


def widget_names(info: dict) -> list[str]:
    """widgets_values slots of a node type, from /object_info (same rules as the frontend)."""
    names = []
    for section in ("required", "optional"):
        for name in info["input_order"].get(section, []):
            kind, *rest = info["input"][section][name]
            options = rest[0] if rest else {}
            is_widget = isinstance(kind, list) or kind in WIDGET_KINDS
            if not is_widget or options.get("forceInput"):
                continue
            names.append(name)
            if options.get("control_after_generate") or (kind == "INT" and name in ("seed", "noise_seed")):
                names.append(None)  # the frontend's "control after generate" value
            if options.get("image_upload"):
                names.append(None)  # the upload button's slot
    return names


def to_api(workflow: dict, object_info: dict) -> dict:
    """UI-format workflow → API prompt (what the frontend's graphToPrompt produces for a plain graph)."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] not in object_info:  # frontend-only nodes (Note)
            continue
        names = widget_names(object_info[node["type"]])
        inputs = {n: v for n, v in zip(names, node["widgets_values"], strict=True) if n is not None}
        for socket_ in node["inputs"]:
            if socket_["link"] is not None:
                _, src, slot, *_ = links[socket_["link"]]
                inputs[socket_["name"]] = [str(src), slot]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def substitute_tiny(prompt: dict, i2v: bool) -> dict:
    """Swap the real model files and sizes for the tiny models written into the base directory."""
    for node in prompt.values():
        inputs, kind = node["inputs"], node["class_type"]
        if kind == "LoadToraModel":
            inputs.update(model=f"tora/tiny_{'i2v' if i2v else 't2v'}.safetensors", vae="vae/tiny_vae/")
        elif kind == "CLIPLoader":
            node["class_type"] = "LoadToraTextEncoder"
            node["inputs"] = {"text_encoder": "text_encoders/tiny_t5/", "tokens": TOKENS}
        elif kind == "LoadImage":
            inputs["image"] = "tora_start_image.png"
        if kind in SIZE_NODES:
            inputs.update(width=WIDTH, height=HEIGHT, frames=FRAMES)
        if kind == "ToraSampler":
            inputs["steps"] = STEPS
        if kind == "TrajectoryPreview":
            inputs["frames"] = FRAMES
    return prompt


def webp_frames(data: bytes) -> list[np.ndarray]:
    from PIL import Image, ImageSequence

    return [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(Image.open(BytesIO(data)))]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy_base")
    python = ensure_venv(VENV, build_server_venv(Path(COMFY)))
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / PACK_LINK_NAME).symlink_to(PACK_ROOT, target_is_directory=True)
    write_tiny_models(base / "models")
    (base / "input").mkdir()
    write_start_image(base / "input" / "tora_start_image.png", WIDTH, HEIGHT)
    # a user's own `tora:` path (loaded before custom nodes): the pack must add models/tora, not replace it
    (base / "elsewhere").mkdir()
    shutil.copy(
        base / "models" / "tora" / "tiny_t2v.safetensors", base / "elsewhere" / "from_yaml.safetensors"
    )
    (base / "extra_model_paths.yaml").write_text(f"mine:\n  tora: {base / 'elsewhere'}\n")
    srv = Server(base)
    srv.start(python)
    yield srv
    srv.stop()


def test_pack_loads_without_import_errors(server):
    log = server.log.read_text()
    assert f"IMPORT FAILED): {server.base / 'custom_nodes' / PACK_LINK_NAME}" not in log, log[-4000:]
    object_info = server.get("/object_info")
    assert set(OUR_IDS) <= set(object_info)
    models = object_info["LoadToraModel"]["input"]["required"]["model"][0]
    assert {"tora/tiny_t2v.safetensors", "tora/from_yaml.safetensors"} <= set(models)  # both tora paths kept
    assert "tora/tiny_tora/transformer.safetensors" in models  # bundled in the pack's models/
    served = {url.rsplit("/", 1)[-1] for url in server.get("/extensions") if f"/{PACK_LINK_NAME}/" in url}
    assert {p.name for p in (PACK_ROOT / "web" / "js").glob("*.js")} <= served, (
        served
    )  # the canvas widget's modules


@pytest.mark.parametrize(
    "name", sorted(p.stem for p in (PACK_ROOT / "example_workflows").glob("*.json")), ids=lambda n: n
)
def test_example_workflow_runs(server, name):
    """Each workflow over /prompt; the Tora ones with tiny random models, the tiny one as saved (timed)."""
    workflow = json.loads((PACK_ROOT / "example_workflows" / f"{name}.json").read_text())
    object_info = server.get("/object_info")
    prompt = to_api(workflow, object_info)
    if name != TINY_WORKFLOW:
        prompt = substitute_tiny(prompt, i2v="image to video" in name)
    start = time.monotonic()
    entry = server.run(prompt)
    seconds = time.monotonic() - start
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    if name == TINY_WORKFLOW:
        assert seconds < TINY_MAX_SECONDS, f"{name} took {seconds:.1f} s from Queue to its history entry"
    saved = [
        ref
        for node_id, out in entry["outputs"].items()
        if prompt[node_id]["class_type"] == "SaveAnimatedWEBP"
        for ref in out["images"]
    ]
    assert len(saved) == sum(n["type"] == "SaveAnimatedWEBP" for n in workflow["nodes"])
    scale = TINY_SAVED_SCALE if name == TINY_WORKFLOW else 1
    for ref in saved:
        frames = webp_frames(server.get("/view?" + urllib.parse.urlencode(ref)))
        assert len(frames) == (TINY_FRAMES if name == TINY_WORKFLOW else FRAMES)
        assert frames[0].shape == (HEIGHT * scale, WIDTH * scale, 3)


def test_invalid_frames_are_refused_with_a_clear_message(server):
    workflow = json.loads(PRESET_WORKFLOW.read_text())
    prompt = substitute_tiny(to_api(workflow, server.get("/object_info")), i2v=False)
    sampler = next(n for n in prompt.values() if n["class_type"] == "ToraSampler")
    sampler["inputs"]["frames"] = 10
    entry = server.run(prompt)
    assert entry["status"]["status_str"] == "error"
    message = json.dumps(entry["status"]["messages"])
    assert "num_frames must be" in message


WS_CLIENT = r'''
"""Queue a prompt, follow /ws, press Cancel (POST /interrupt) after the sampler's second step; print a summary."""
import asyncio, json, sys, time, uuid
import aiohttp

BASE, PROMPT, SAMPLER = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]


async def main():
    cid = str(uuid.uuid4())
    summary = {"progress": [], "previews": 0, "interrupted_at": None, "end": None}
    async with aiohttp.ClientSession() as s:
        ws = await s.ws_connect(BASE.replace("http", "ws", 1) + "/ws?clientId=" + cid)
        async with s.post(BASE + "/prompt", json={"prompt": PROMPT, "client_id": cid}) as r:
            assert r.status == 200, await r.text()
        while summary["end"] is None:
            msg = await asyncio.wait_for(ws.receive(), timeout=600)
            if msg.type == aiohttp.WSMsgType.BINARY:
                summary["previews"] += 1
                continue
            m = json.loads(msg.data)
            kind, data = m["type"], m.get("data", {})
            if kind == "progress" and data.get("node") == SAMPLER:
                summary["progress"].append([data["value"], data["max"]])
                if data["value"] >= 2 and summary["interrupted_at"] is None:
                    summary["interrupted_at"] = data["value"]
                    summary["t_interrupt"] = time.time()
                    await s.post(BASE + "/interrupt")
            if kind in ("execution_interrupted", "execution_success", "execution_error"):
                summary["end"] = kind
                summary["seconds_after_interrupt"] = time.time() - summary.get("t_interrupt", time.time())
    print(json.dumps(summary))


asyncio.run(main())
'''


def test_progress_previews_and_cancel_within_one_step(server):
    """Cancel during sampling ends the run at the next step; the next run (fp8 + block swap) works."""
    workflow = json.loads(PRESET_WORKFLOW.read_text())
    prompt = substitute_tiny(to_api(workflow, server.get("/object_info")), i2v=False)
    sampler_id = next(k for k, n in prompt.items() if n["class_type"] == "ToraSampler")
    prompt[sampler_id]["inputs"].update(steps=40, seed=123)
    script = server.base / "ws_client.py"
    script.write_text(WS_CLIENT)
    run = subprocess.run(
        [str(VENV / "bin" / "python"), str(script), server.url, json.dumps(prompt), sampler_id],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["end"] == "execution_interrupted", summary
    steps_seen = [value for value, total in summary["progress"]]
    assert all(total == 40 for _, total in summary["progress"])
    assert max(steps_seen) <= summary["interrupted_at"] + 1, summary  # stopped within one step
    assert (
        summary["previews"] >= 1
    )  # latent previews reach the browser (server runs --preview-method latent2rgb)
    prompt[sampler_id]["inputs"].update(steps=STEPS)
    loader = next(n for n in prompt.values() if n["class_type"] == "LoadToraModel")
    # the memory options inside ComfyUI: fp8 weights, ComfyUI's attention kernel, block swap
    loader["inputs"].update(precision="fp8_e4m3fn", attention="comfy", offload="block_swap", blocks_to_swap=1)
    assert server.run(prompt)["status"]["status_str"] == "success"


TEXT_CHECK = r'''
"""In ComfyUI's own python: the pack's T5 tokens vs Tora's official tokenization, and ConditioningZeroOut.

Two CLIP tokenizer layouts, both from this ComfyUI's real classes: CLIPLoader type `sd3` (SD3Tokenizer, T5 under
`t5xxl`) and the layout of newer cores' type `cogvideox` (an SD1Tokenizer wrapper named "t5xxl", so the T5 sits
under `clip_t5xxl`, padding to at least 226 tokens without truncating).
"""
import functools, importlib.util, json, sys
COMFY, PACK = sys.argv[1], sys.argv[2]
sys.path.insert(0, COMFY)
from comfy.cli_args import args
args.cpu = True
import torch
from transformers import T5TokenizerFast
import comfy.sd1_clip as sd1_clip
import comfy.text_encoders.sd3_clip as sd3_clip
import nodes as core_nodes

spec = importlib.util.spec_from_file_location("tora_pack", PACK + "/__init__.py", submodule_search_locations=[PACK])
sys.modules["tora_pack"] = importlib.util.module_from_spec(spec)  # imported as ComfyUI imports a pack
spec.loader.exec_module(sys.modules["tora_pack"])
glue = importlib.import_module("tora_pack.nodes.comfy_glue")
LAYOUTS = {
    "sd3": sd3_clip.SD3Tokenizer,
    "cogvideox": functools.partial(
        sd1_clip.SD1Tokenizer, clip_name="t5xxl", tokenizer=functools.partial(sd3_clip.T5XXLTokenizer, min_length=226)
    ),
}


class EncoderStandIn:
    """ComfyUI's real tokenizer classes; records what would reach the (4.7B-parameter) T5 instead of running it."""

    def __init__(self, layout):
        self.tokenizer = LAYOUTS[layout]()
        self.seen = None

    def tokenize(self, text):
        return self.tokenizer.tokenize_with_weights(text)

    def encode_from_tokens(self, tokens, return_dict=False):
        self.seen = tokens
        return {"cond": torch.randn(1, len(tokens["t5xxl"][0]), 4096)}


official = T5TokenizerFast.from_pretrained(COMFY + "/comfy/text_encoders/t5_tokenizer")
report = []
for layout in LAYOUTS:
    for prompt in ["a red balloon drifts over a valley, at sunrise.", "word " * 300, "  two  spaces\nand a newline"]:
        clip = EncoderStandIn(layout)
        core = [t for t, *_ in clip.tokenize(prompt)["t5xxl"][0]]  # what ComfyUI alone would send
        cond = glue.comfy_t5_embeddings(clip, prompt, 226)
        ids = [t for t, _ in clip.seen["t5xxl"][0]]
        want = official(prompt, max_length=226, padding="max_length", truncation=True)["input_ids"]
        zero = core_nodes.ConditioningZeroOut().zero_out([[cond, {}]])[0]
        report.append({"layout": layout, "equal": ids == want, "length": len(ids), "core_equal": core == want,
                       "other_encoders": sorted(len(clip.seen[k]) for k in clip.seen if k != "t5xxl"),
                       "shape": list(cond.shape), "zero_ok": bool(zero[0][0].abs().max() == 0) and list(zero[0][0].shape) == [1, 226, 4096]})
print(json.dumps(report))
'''


def test_text_tokens_match_official_and_zero_out_is_the_official_negative(server):
    """Both CLIPLoader layouts give Tora's official 226 tokens; the cogvideox one alone agrees for short prompts and
    does not truncate long ones, which the pack does, as Tora's tokenizer did."""
    script = server.base / "text_check.py"
    script.write_text(TEXT_CHECK)
    run = subprocess.run(
        [str(VENV / "bin" / "python"), str(script), COMFY, str(PACK_ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=COMFY,
        env={**os.environ, "PYTHONPATH": str(server.base / "shims")},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert [case["layout"] for case in report] == ["sd3"] * 3 + ["cogvideox"] * 3
    # core's cogvideox tokens alone: official for short prompts, 301 untruncated tokens for the long one
    assert [case["core_equal"] for case in report[3:]] == [True, False, True]
    for case in report:
        layout = case.pop("layout")
        case.pop("core_equal")
        assert case == {
            "equal": True,
            "length": 226,
            "other_encoders": [0, 0] if layout == "sd3" else [],
            "shape": [1, 226, 4096],
            "zero_ok": True,
        }


FRONTEND_CHECK = r"""
// Load every example workflow into the real frontend served by the test server; report graphToPrompt().output.
import { readFileSync } from "node:fs";
import { launch } from "PACK/tests/js/browser.mjs";

const [base, ...files] = process.argv.slice(2);
await fetch(`${base}/settings/Comfy.TutorialCompleted`, { method: "POST", body: "true" });
const browser = await launch({ width: 1400, height: 900 });
const page = browser.page;
const pageErrors = [];
page.on("pageerror", (e) => pageErrors.push(String(e)));
page.on("console", (m) => { if (m.type() === "error" || /invalid|validat/i.test(m.text())) pageErrors.push(`${m.type()}: ${m.text()}`); });
await page.goto(base);
await page.waitForFunction(() => window.app?.graph && window.LiteGraph?.registered_node_types?.ToraSampler, null, { timeout: 90000 });
const results = {};
for (const file of files) {
  const workflow = JSON.parse(readFileSync(file, "utf8"));
  results[file] = await page.evaluate(async (wf) => {
    await app.loadGraphData(wf);
    const missing = app.graph._nodes.filter((n) => !LiteGraph.registered_node_types[n.type]).map((n) => n.type);
    const saved = JSON.parse(JSON.stringify(app.graph.serialize()));
    const prompt = await app.graphToPrompt();
    return { missing, output: prompt.output, widgets: Object.fromEntries(saved.nodes.map((n) => [String(n.id), n.widgets_values ?? []])) };
  }, workflow);
}
await browser.close();
console.log(JSON.stringify({ results, pageErrors }));
"""


def browser_tools() -> str:
    """The node binary, or skip when the real-frontend checks cannot run here."""
    node = shutil.which("node")
    if (
        not node
        or not (PACK_ROOT / "node_modules" / "playwright-core").is_dir()
        or not Path("/usr/bin/chromium").exists()
    ):
        pytest.skip("needs node, npm playwright-core (npm ci) and /usr/bin/chromium")
    return node


def check_workflows_in_frontend(server, tmp_path: Path) -> None:
    """The frontend `server` serves loads each workflow unchanged and queues what to_api() builds."""
    node = browser_tools()
    script = tmp_path / "frontend_check.mjs"
    script.write_text(FRONTEND_CHECK.replace("PACK/", f"{PACK_ROOT}/"))
    files = sorted(str(p) for p in (PACK_ROOT / "example_workflows").glob("*.json"))
    run = subprocess.run([node, str(script), server.url, *files], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    # offline noise (404s for user.css etc., model-size lookups of the `models` URLs), 1.27.10's own boot error, and
    # 1.5x on 0.3.64: /api/jobs (newer cores) answers 404, and its panel-layout warning
    known = ("404 (Not Found)", "ERR_NAME_NOT_RESOLVED", "Error fetching file size", "reading 'id'")
    known += ("Failed to fetch jobs: 404", "Layout normalization will be applied")
    assert [m for m in report["pageErrors"] if not any(k in m for k in known)] == []
    object_info = server.get("/object_info")
    for file, result in report["results"].items():
        workflow = json.loads(Path(file).read_text())
        assert result["missing"] == [], file
        for node_ in workflow["nodes"]:
            assert result["widgets"][str(node_["id"])] == node_["widgets_values"], (file, node_["type"])
        queued = {
            k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in result["output"].items()
        }
        assert queued == to_api(workflow, object_info), file


def test_example_workflows_load_in_the_real_frontend(server, tmp_path):
    """The frontend ComfyUI 0.3.64 pins (1.27.10); tests/test_real_frontends.py adds the newest."""
    check_workflows_in_frontend(server, tmp_path)


def wan_track_prompt() -> dict:
    """Trajectory Canvas `coordinates` → core WanTrackToVideo `tracks` → SaveLatent; text from Tora Empty Text,
    a start image, and a VAE file that is not a model (no Wan weights here)."""
    path = {"kind": "path", "points": [[10.0, 40.0], [80.0, 20.0]], "interpolation": "smooth"}
    canvas = {"version": 1, "width": WIDTH, "height": HEIGHT, "tracks": [{**path, "start_frame": 0,
              "end_frame": None, "easing": "linear"}]}  # fmt: skip
    size = {"width": WIDTH, "height": HEIGHT}
    model = {"model": "tora/tiny_t2v.safetensors", "vae": "vae/tiny_vae/", "precision": "fp32"}
    wan = {**size, "length": 17, "batch_size": 1, "temperature": 220.0, "topk": 2}
    links = {
        "positive": ["3", 0],
        "negative": ["3", 0],
        "vae": ["4", 0],
        "tracks": ["1", 1],
        "start_image": ["5", 0],
    }
    return {
        "1": {
            "class_type": "TrajectoryCanvas",
            "inputs": {**size, "frames": 17, "trajectory": json.dumps(canvas)},
        },
        "2": {
            "class_type": "LoadToraModel",
            "inputs": {**model, "attention": "sdpa", "offload": "comfy", "blocks_to_swap": 0},
        },  # fmt: skip
        "3": {"class_type": "ToraEmptyText", "inputs": {"model": ["2", 0]}},
        "4": {"class_type": "VAELoader", "inputs": {"vae_name": "not_a_wan_vae.safetensors"}},
        "5": {"class_type": "LoadImage", "inputs": {"image": "tora_start_image.png"}},
        "6": {"class_type": "WanTrackToVideo", "inputs": {**wan, **links}},
        "7": {
            "class_type": "SaveLatent",
            "inputs": {"samples": ["6", 2], "filename_prefix": "tora_wan_track"},
        },
    }


def test_canvas_coordinates_feed_core_wan_track_to_video(server):
    """Wan ATI's WanTrackToVideo takes the canvas's `coordinates` STRING as its `tracks` input. The prompt passes
    ComfyUI's validation (HTTP 200, no node errors); without Wan weights the run then stops at the first model
    use, VAELoader opening the stand-in file, before WanTrackToVideo executes."""
    object_info = server.get("/object_info")
    if "WanTrackToVideo" not in object_info:
        pytest.skip("this ComfyUI has no WanTrackToVideo")
    assert object_info["WanTrackToVideo"]["input"]["required"]["tracks"][0] == "STRING"
    (server.base / "models" / "vae" / "not_a_wan_vae.safetensors").write_bytes(b"not a model")
    prompt = wan_track_prompt()
    status, body = server.post("/prompt", {"prompt": prompt, "client_id": "tora-test"})
    assert status == 200 and body["node_errors"] == {}, body
    entry = server.wait(body["prompt_id"])
    assert entry["status"]["status_str"] == "error"
    error = next(data for kind, data in entry["status"]["messages"] if kind == "execution_error")
    assert error["node_type"] == "VAELoader", error
    assert "6" not in entry["outputs"] and "7" not in entry["outputs"]
