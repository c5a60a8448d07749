"""scripts/bench_train.py --gpu-report: refused in one sentence without CUDA; its parts (the prediction
throughput, the dated Markdown section, the docs page's marked section replaced) work on the CPU."""

import pandas as pd
import pytest
import torch

from coremax import bench


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is what a machine without CUDA does")
def test_without_cuda_the_report_says_so_in_one_sentence_and_exits_2(tmp_path, capsys):
    from coremax.cli import bench_train_main

    page = tmp_path / "benchmarks.md"
    with pytest.raises(SystemExit) as e:
        bench_train_main(["--gpu-report", "--docs", str(page)])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "CUDA" in err and "Traceback" not in err
    assert not page.exists()  # nothing written


def test_prediction_throughput_runs_the_prediction_path():
    out = bench.predict_throughput(100, device="cpu")
    assert out["spectra"] == 100 and out["spectra_per_s"] > 0 and out["batch"] == 64  # a CPU's batch


def test_a_cpu_predicts_in_smaller_batches_than_a_gpu():
    from coremax.engine.inference import pred_batch

    assert pred_batch("cpu") == 64 and pred_batch("cuda:0") == pred_batch(torch.device("cuda")) == 256


def test_the_report_is_a_dated_section_that_replaces_its_predecessor(tmp_path):
    train = pd.DataFrame([{"case": "tiny pretrain bf16 + compile", "batch": 512, "spectra_per_s": 12345.6,
                           "tflops": 98.7, "mfu": 0.1234, "peak_mem_mib": 2048.0},
                          {"case": "base finetune bf16", "batch": 256, "spectra_per_s": 999.0, "tflops": 50.0,
                           "mfu": float("nan"), "peak_mem_mib": 9000.0}])
    predict = {"size": "tiny", "spectra": 100000, "batch": 256, "spectra_per_s": 54321.0}
    first = bench.report_markdown("2027-01-02", "python scripts/bench_train.py --gpu-report", "abc1234",
                                  "NVIDIA H100", (0, "7 passed in 30.0s"), train, predict)
    assert "2027-01-02" in first and "abc1234" in first and "`python scripts/bench_train.py --gpu-report`" in first
    assert "| tiny pretrain bf16 + compile | 512 | 12345.6 | 98.7 | 12.3% | 2048.0 |" in first
    assert "| n/a |" in first and "54,321.0 spectra/s" in first and "7 passed" in first
    page = tmp_path / "benchmarks.md"
    page.write_text("# Results: benchmarks\n\nBefore.\n")
    bench.write_report(page, first)
    second = first.replace("2027-01-02", "2027-02-03").replace("7 passed", "6 passed, 1 failed")
    bench.write_report(page, second)
    text = page.read_text()
    assert text.startswith("# Results: benchmarks\n\nBefore.\n") and text.count(bench.REPORT_BEGIN) == 1
    assert "2027-02-03" in text and "2027-01-02" not in text and text.count(bench.REPORT_END) == 1


def test_the_report_cases_are_tiny_and_base_in_bf16_eager_and_compiled():
    cases = bench.report_cases()
    names = [c["name"] for c in cases]
    assert len(names) == 8 and all("bf16" in n for n in names)
    assert {n.split()[0] for n in names} == {"tiny", "base"} and sum("compile" in n for n in names) == 4
    assert all('runtime.device="cuda"' in c["overrides"] for c in cases)
