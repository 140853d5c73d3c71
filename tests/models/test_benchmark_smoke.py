"""benchmarks/model_step.py runs end to end (tiny sizes) and reports every number it promises."""
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "model_step.py"


@pytest.mark.slow
def test_model_step_benchmark_smoke(capsys):
    spec = importlib.util.spec_from_file_location("model_step", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--size", "64", "--batch", "1", "--classes", "3", "--text-dim", "16", "--warmup", "0",
                          "--reps", "1", "--predict-reps", "1", "--allocator", "glibc"])
    assert result["train_text_overhead_ratio"] > 0 and result["predict_speedup_one_pass"] > 0
    assert set(result["peak_rss_delta_mb"]) == {"text_cross_attn", "no_text", "one_pass", "per_class_loop"}
    params = result["params"]
    assert len(params) == 6 and params["cross_attn/conv"] > params["film/conv"] > params["none/conv"]
    assert '"checks"' in capsys.readouterr().out
