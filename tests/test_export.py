"""`pathfm export`: timm, Hugging Face and DINOv2-hub exports return pathfm's tokens; model card; bad input.

The exported runs hold a teacher (vit_small for timm, whose DINOv2 models start there; vit_pico otherwise) whose every parameter is redrawn with a scale that makes each
block matter, and 37x37 positional embeddings (as after ``model.init_from=dinov2:vits14``), so the export
has to resize them: parity at 224 px then tests the resize as well as the key layouts. transformers is an
optional extra (``pathfm[hf]``); its tests skip with the reason when it is absent.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pytest
import timm
import torch

from pathfm.backbone import foreign_weights as fw
from pathfm.backbone.backbone_file import export_backbone
from pathfm.backbone.foreign_export import prepared_state, to_timm_state
from pathfm.backbone.vit import VisionTransformer, build_backbone
from pathfm.cli import main
from pathfm.config import load_config
from pathfm.errors import ConfigError
from pathfm.eval.sources import load_source
from pathfm.export.run import ExportError, export_run

TOL = 1e-5
SIZE = 224
# (n_registers, layerscale, pos-embed offset, antialias): DINOv2's plain and _reg4 settings; the _reg4 run
# has no LayerScale (the cpu preset's choice), which timm and HF models must still load
VARIANTS = {"plain": (0, 1e-5, 0.1, False), "reg4": (4, None, 0.0, True)}


def _scramble(model: torch.nn.Module, seed: int) -> None:
    """Every weight at a scale where it changes the output (LayerScale gammas near 0.5, norms near 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma") or ("norm" in name and name.endswith("weight")):
                p.copy_((0.5 if name.endswith("gamma") else 1.0) + 0.2 * torch.randn(p.shape, generator=g))
            else:
                scale = 0.5 if p.ndim < 2 or "token" in name or "pos_embed" in name else 1.0 / math.sqrt(p[0].numel())
                p.copy_(scale * torch.randn(p.shape, generator=g))


def make_run(root: Path, arch: str, variant: tuple, *, grid: int, size: int = SIZE, done: bool = True,
             ffn: str = "mlp") -> Path:  # fmt: skip
    regs, layerscale, offset, antialias = variant
    overrides = [f"model.arch={arch}", f"model.n_registers={regs}", f"model.layerscale={layerscale or 'null'}",
                 f"model.pos_embed_offset={offset}", f"model.pos_embed_antialias={antialias}",
                 f"data.crops.global_size={size}", f"model.ffn={ffn}"]  # fmt: skip
    cfg = load_config("smoke", overrides)
    torch.manual_seed(0)
    model = build_backbone(cfg.model)
    model.pos_embed = torch.nn.Parameter(torch.zeros(1, 1 + grid * grid, model.embed_dim))
    _scramble(model, seed=regs + 1)
    root.mkdir(parents=True, exist_ok=True)
    export_backbone(model, root / "teacher_backbone.pt", step=30)
    (root / "config.yaml").write_text(cfg.to_yaml())
    if done:
        (root / "DONE").touch()
    return root


def _run_fixture(arch: str):
    @pytest.fixture(scope="module", params=list(VARIANTS))
    def fixture(request, tmp_path_factory) -> tuple[Path, torch.nn.Module, int]:
        """(run dir, its teacher as pathfm loads it, registers) of a finished run with a 37x37 grid."""
        from pathfm.backbone.backbone_file import load_backbone

        variant = VARIANTS[request.param]
        run_dir = make_run(tmp_path_factory.mktemp(f"{arch}_{request.param}"), arch, variant, grid=37)
        return run_dir, load_backbone(run_dir / "teacher_backbone.pt")[0], variant[0]

    return fixture


small_run = _run_fixture("vit_small")  # timm has DINOv2 models from vit_small up
pico_run = _run_fixture("vit_pico")  # the hf and dinov2 layouts take any size: the fast one


def _images(size: int, n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _assert_tokens(ref: dict, cls: torch.Tensor, patch: torch.Tensor) -> None:
    assert (cls - ref["cls"]).abs().max() <= TOL
    assert (patch - ref["patch"]).abs().max() <= TOL


# ---------------------------------------------------------------------------------------------- timm
def test_timm_export_returns_pathfms_tokens_with_both_loaders(small_run):
    run_dir, teacher, regs = small_run
    res = export_run(run_dir, "timm")
    assert res.name == f"vit_small_patch14{'_reg4' if regs else ''}_dinov2" and res.img_size == SIZE
    x = _images(SIZE)
    with torch.no_grad():
        ref = teacher.forward_features(x)
        by_dir = timm.create_model(f"local-dir:{res.out_dir}", pretrained=True).eval()
        assert tuple(by_dir.pretrained_cfg["mean"]) == (0.5,) * 3 and tuple(by_dir.pretrained_cfg["std"]) == (0.5,) * 3
        by_name = timm.create_model(res.name, pretrained=True, img_size=SIZE, num_classes=0,
                                    pretrained_cfg_overlay=dict(file=str(res.out_dir / "model.safetensors"))).eval()  # fmt: skip
        for net in (by_dir, by_name):
            out = net.forward_features(x)
            _assert_tokens(ref, out[:, 0], out[:, 1 + regs :])
        # the same file as a `pathfm eval` source: timm:<name>:<file> (img_size from the config.json beside it)
        source = load_source(f"timm:{res.name}:{res.out_dir / 'model.safetensors'}")
        assert (source.mean, source.std, source.native_size) == ((0.5,) * 3, (0.5,) * 3, SIZE)
        out = source.model.forward_features(x)
        _assert_tokens(ref, out["cls"], out["patch"])
    assert (run_dir / "export" / "timm" / "README.md").read_text().startswith("---\nlicense: other\nlibrary_name: timm\n")


def test_timm_export_of_a_size_timm_does_not_name_loads_from_its_folder(pico_run):
    """A smoke-scale pico ViT (width 96, depth 4) keeps timm's vit_small DINOv2 layout with its own sizes in
    config.json's model_args: timm's ``local-dir:`` loader and ``pathfm eval timm:<name>:<file>`` rebuild it."""
    run_dir, teacher, regs = pico_run
    res = export_run(run_dir, "timm")
    assert res.name == f"vit_small_patch14{'_reg4' if regs else ''}_dinov2"
    args = json.loads((res.out_dir / "config.json").read_text())["model_args"]
    assert {k: args[k] for k in ("embed_dim", "depth", "num_heads", "img_size")} == {
        "embed_dim": 96, "depth": 4, "num_heads": 3, "img_size": [SIZE, SIZE]}
    x = _images(SIZE)
    with torch.no_grad():
        ref = teacher.forward_features(x)
        out = timm.create_model(f"local-dir:{res.out_dir}", pretrained=True).eval().forward_features(x)
        _assert_tokens(ref, out[:, 0], out[:, 1 + regs :])
        source = load_source(f"timm:{res.name}:{res.out_dir / 'model.safetensors'}")
        out = source.model.forward_features(x)
        _assert_tokens(ref, out["cls"], out["patch"])


def test_timm_giant_layout_swiglu_at_reduced_depth():
    """vit_giant_patch14_dinov2 (the Midnight architecture) has timm's packed SwiGLU; checked at width 96 and
    depth 2 (timm's hidden size int(96 * 5.33334) = 512 = 2 x pathfm's 256, as 8192 = 2 x 4096 at 1536)."""
    model = VisionTransformer(embed_dim=96, depth=2, num_heads=3, ffn="swiglu", attention="sdpa").eval()
    _scramble(model, seed=7)
    net = timm.create_model("vit_giant_patch14_dinov2", pretrained=False, img_size=SIZE, embed_dim=96, depth=2,
                            num_heads=3, num_classes=0)  # fmt: skip
    net.load_state_dict(to_timm_state(prepared_state(model, SIZE)), strict=True)
    x = _images(SIZE, n=1, seed=3)
    with torch.no_grad():
        out = net.eval().forward_features(x)
        _assert_tokens(model.forward_features(x), out[:, 0], out[:, 1:])


# ------------------------------------------------------------------------------------------------ hf
def test_hf_export_returns_pathfms_tokens_at_its_size(pico_run):
    transformers = pytest.importorskip("transformers", reason="the hf export test needs pip install 'pathfm[hf]'")
    run_dir, teacher, regs = pico_run
    res = export_run(run_dir, "hf", run_dir / "hf_out")
    net, info = transformers.AutoModel.from_pretrained(str(res.out_dir), output_loading_info=True)
    assert type(net).__name__ == ("Dinov2WithRegistersModel" if regs else "Dinov2Model") == res.name
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    net.eval()
    with torch.no_grad():
        x = _images(SIZE, seed=1)
        out = net(pixel_values=x).last_hidden_state
        _assert_tokens(teacher.forward_features(x), out[:, 0], out[:, 1 + regs :])
        # at another size HF resizes the stored 16x16 grid, pathfm its own 37x37 one: they differ
        x = _images(392, n=1, seed=2)
        assert (net(pixel_values=x).last_hidden_state[:, 0] - teacher.forward_features(x)["cls"]).abs().max() > 1e-3


@pytest.mark.parametrize("variant", ["plain_offset0", "reg4", "swiglu"])
def test_hf_equals_pathfm_at_every_size_when_the_resize_settings_agree(tmp_path, variant):
    """Stored grid = export grid and pathfm's offset 0 (Dinov2Model: no antialias; with registers:
    antialias): then HF resizes exactly as pathfm does, at 392 px and 98 px too. swiglu: the FFN of
    DINOv2's giant (``mlp.weights_in`` split into HF's gate and up projections)."""
    transformers = pytest.importorskip("transformers", reason="the hf export test needs pip install 'pathfm[hf]'")
    settings = {"plain_offset0": (0, 1e-5, 0.0, False), "reg4": VARIANTS["reg4"], "swiglu": (0, 1e-5, 0.0, False)}[variant]
    run_dir = make_run(tmp_path / "run", "vit_pico", settings, grid=16, ffn="swiglu" if variant == "swiglu" else "mlp")
    res = export_run(run_dir, "hf")
    net = transformers.AutoModel.from_pretrained(str(res.out_dir)).eval()
    from pathfm.backbone.backbone_file import load_backbone

    teacher = load_backbone(run_dir / "teacher_backbone.pt")[0]
    for size in (392, 98):
        x = _images(size, n=1, seed=size)
        with torch.no_grad():
            out = net(pixel_values=x).last_hidden_state
            _assert_tokens(teacher.forward_features(x), out[:, 0], out[:, 1 + settings[0] :])


# -------------------------------------------------------------------------------------------- dinov2
def test_dinov2_export_round_trips_through_the_importer(pico_run, tmp_path):
    run_dir, teacher, regs = pico_run
    res = export_run(run_dir, "dinov2", tmp_path)
    assert res.name == f"dinov2_vit_pico_p14{'_reg4' if regs else ''}_pretrain.pth"
    state = torch.load(res.files[0], weights_only=True)
    assert state.keys() == teacher.state_dict().keys() and state["pos_embed"].shape[1] == 1 + 37 * 37
    converted = fw.convert_state_dict(state, res.files[0])
    assert converted.layout == "dinov2" and converted.pos_embed == VARIANTS["reg4" if regs else "plain"][2:]
    back = build_backbone(teacher.cfg, drop_path=0.0).eval()
    fw.load_strict(back, converted.state, "test")
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in teacher.state_dict().items())


# ------------------------------------------------------------------------------------- card and CLI
def test_model_card_has_front_matter_data_recipe_and_eval_table(tmp_path):
    run_dir = make_run(tmp_path / "run", "vit_pico", VARIANTS["plain"], grid=16)
    (run_dir / "metrics.jsonl").write_text('{"step": 29, "tiles_seen": 232}\n{"step": 30, "tiles_seen": 240, '
                                           '"acceptance_rate": 0.625}\n')  # fmt: skip
    (run_dir / "training_slides.csv").write_text("slide_id,cohort,mpp\na,tcga,0.5\nb,tcga,0.25\nc,cmu,0.5\n")
    rows = [{"source": str(run_dir), "backbone": b, "task": "crc@224px", "probe": "linear", "fold": f,
             "metric": "balanced_accuracy", "value": v + 0.01 * f, "step": 30, "n_train": 80, "n_test": 20}
            for b, v in (("trained", 0.8), ("random_init", 0.5), ("color_histogram", 0.6)) for f in range(2)]  # fmt: skip
    pl.DataFrame(rows).write_parquet(run_dir / "eval.parquet")
    res = export_run(run_dir, "pathfm", license_id="cc-by-nc-4.0")
    card = (res.out_dir / "README.md").read_text()
    assert card.startswith("---\nlicense: cc-by-nc-4.0\nlibrary_name: pytorch\ntags:\n- pathology\n")
    assert "- slides: 3 (from `training_slides.csv`)" in card and "cohort values: 2 (cmu, tcga)" in card
    assert "- tiles seen: 240 (step 30)" in card and "acceptance rate: 0.625" in card
    assert "| `loss.kde_weight` | `0.05` |" in card and "| `model.arch` | `\"vit_pico\"` |" in card
    assert "| task | probe | folds | trained | random_init | color_histogram |" in card
    assert "| crc@224px | linear | 2 | 0.805 ± 0.007 | 0.505 ± 0.007 | 0.605 ± 0.007 |" in card
    assert (res.out_dir / "teacher_backbone.pt").read_bytes() == (run_dir / "teacher_backbone.pt").read_bytes()


def test_bad_input_names_the_path_and_what_is_missing(tmp_path, capsys):
    unfinished = make_run(tmp_path / "unfinished", "vit_pico", VARIANTS["plain"], grid=16, done=False)
    with pytest.raises(ExportError, match=r"unfinished: training has not finished \(no .*unfinished/DONE\).*resume="):
        export_run(unfinished, "hf")
    export_run(unfinished / "teacher_backbone.pt", "pathfm", tmp_path / "as_is")  # naming the file exports it
    empty = tmp_path / "empty"
    (empty / "checkpoints").mkdir(parents=True)
    (empty / "checkpoints" / "step_00000010.pt").touch()
    with pytest.raises(ExportError, match=r"empty: no teacher_backbone.pt.*newest checkpoint is .*step_00000010.pt"):
        export_run(empty, "timm")
    finished = make_run(tmp_path / "pico", "vit_pico", VARIANTS["plain"], grid=16)
    assert main(["export", str(tmp_path / "nowhere"), "--format", "timm"]) == 2
    assert "nowhere: no such run directory or file" in capsys.readouterr().err
    assert main(["export", str(finished), "--format", "dinov2", "--out", str(tmp_path / "d")]) == 0
    assert "dinov2_vit_pico_p14_pretrain.pth" in capsys.readouterr().out


# ------------------------------------------------------------------------- the card's snippets run as written
def _card_code(out_dir: Path) -> str:
    import re

    return re.search(r"## How to load\n\n```python\n(.*?)```", (out_dir / "README.md").read_text(), re.S).group(1)


def test_timm_card_snippet_loads_a_size_timm_does_not_name(pico_run, tmp_path):
    """The card's by-name call (``vit_small_patch14_dinov2`` for a 96-dim pico model) carries the size arguments
    of config.json: executed as written it loads the export with the exact weights."""
    run_dir, teacher, regs = pico_run
    res = export_run(run_dir, "timm", tmp_path)
    namespace = {"x": _images(SIZE, n=1)}
    exec(_card_code(res.out_dir), namespace)  # noqa: S102 - the card's own code, as a user runs it
    expected = to_timm_state(prepared_state(teacher, SIZE))
    got = namespace["model"].state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], v) for k, v in expected.items())
    assert namespace["tokens"].shape == (1, 1 + regs + (SIZE // 14) ** 2, 96)


def _dinov2_call(code: str) -> tuple[str, dict]:
    import ast

    assert "<" not in code.split("# or in pathfm")[0]  # no placeholder left
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Assign) and node.targets[0].id == "backbone":
            call = node.value
            args = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
            if isinstance(call.func, ast.Attribute):  # torch.hub.load(repo, entry, ...)
                assert ast.literal_eval(call.args[0]) == "facebookresearch/dinov2"
                return ast.literal_eval(call.args[1]), args
            return call.func.id, args
    raise AssertionError(f"no backbone = ... in {code}")


def test_dinov2_card_gives_the_constructor_and_its_arguments(pico_run, small_run, tmp_path):
    """The hub entry for a hub size (``dinov2_vits14[_reg]``), else ``DinoVisionTransformer`` with every size
    argument; checked against pathfm's model config (the DINOv2 code is not importable offline)."""
    run_dir, teacher, regs = pico_run
    variant = VARIANTS["reg4" if regs else "plain"]
    entry, args = _dinov2_call(_card_code(export_run(run_dir, "dinov2", tmp_path / "pico").out_dir))
    assert entry == "DinoVisionTransformer"
    assert args == {"img_size": 37 * 14, "patch_size": 14, "embed_dim": 96, "depth": 4, "num_heads": 3,
                    "mlp_ratio": 4, "ffn_layer": "mlp", "block_chunks": 0, "num_register_tokens": regs,
                    "init_values": variant[1], "interpolate_offset": variant[2], "interpolate_antialias": variant[3]}
    run_dir, teacher, regs = small_run
    entry, args = _dinov2_call(_card_code(export_run(run_dir, "dinov2", tmp_path / "small").out_dir))
    assert entry == ("dinov2_vits14_reg" if regs else "dinov2_vits14") and args.pop("pretrained") is False
    hub_fixed = {} if regs else {"interpolate_offset": 0.1, "interpolate_antialias": False}  # _reg fixes them
    assert args == {"img_size": 37 * 14, "init_values": VARIANTS["reg4" if regs else "plain"][1], **hub_fixed}


def test_exported_files_have_the_usual_permissions(tmp_path):
    """model.safetensors (written by safetensors / timm as 0600) and every other exported file: 0666 less the umask."""
    from pathfm.io import _current_umask

    run_dir = make_run(tmp_path / "run", "vit_pico", VARIANTS["plain"], grid=16)
    usual = 0o666 & ~_current_umask()
    for fmt in ("pathfm", "timm", "hf", "dinov2"):
        out = export_run(run_dir, fmt, tmp_path / fmt).out_dir
        modes = {f.name: oct(f.stat().st_mode & 0o777) for f in out.iterdir()}
        assert set(modes.values()) == {oct(usual)}, (fmt, modes)
