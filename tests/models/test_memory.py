"""The memory plan: the pool sized to a device made to look small, a refusal when not even one slice fits,
`--check` printing it, and the pool never growing past it at run time."""

import pytest
import torch

import app
from models import memory, model_set
from page import views
from serving.comparison import Comparison, Request
from serving.requests import Controls, generation_settings, merge_specs
from tests import tiny_models

GIB = memory.GIB


def device(available_gib: float, slice_gib: float = 1.0, runtime_gib: float = 0.5, packed_gib: float = 0.0):
    return memory.DevicePlan("cpu", int(available_gib * GIB), int(slice_gib * GIB), int(runtime_gib * GIB),
                             int(packed_gib * GIB))


def test_the_pool_is_sized_down_to_what_fits_and_says_so():
    # bank 3 + runtime 0.5 + n slices of 1 GiB: 6 GiB holds 2 slices.
    found = memory.plan([device(6.0)], pool=4)
    assert (found.pool, found.pool_asked) == (2, 4)
    assert any("sized down from 4 to 2" in n and "--dtype bfloat16" in n for n in found.notes)
    assert found.total(found.devices[0]) == int(5.5 * GIB)
    roomy = memory.plan([device(64.0)], pool=4)
    assert roomy.pool == 4 and roomy.notes == ()


def test_packed_copies_come_after_one_slice_and_before_the_rest_of_the_pool():
    # bank 3 + runtime 0.5 + 1 slice = 4.5; packed 3 x 0.5 = 1.5 more: 6.5 GiB holds them, 7 one more slice.
    found = memory.plan([device(6.5, packed_gib=0.5)], pool=4)
    assert found.packed and found.pool == 1
    found = memory.plan([device(7.0, packed_gib=0.5)], pool=4)
    assert found.packed and found.pool == 2
    tight = memory.plan([device(5.0, packed_gib=0.5)], pool=4)
    assert not tight.packed and tight.pool == 1
    assert any("packed copies" in n for n in tight.notes)
    assert "off (1.50 GiB did not fit)" in tight.summary()


def test_every_device_of_a_device_map_must_hold_its_share():
    small_gpu = memory.DevicePlan("cuda:1", int(2.0 * GIB), int(0.25 * GIB), 0)  # holds 3 + n quarters: n <= 5
    found = memory.plan([device(64.0), small_gpu], pool=8)
    assert found.pool == 5
    assert "cuda:1: 2.00 GiB available" in found.summary()


def test_start_is_refused_when_not_even_one_slice_fits():
    with pytest.raises(memory.MemoryPlanError) as err:
        memory.plan([device(4.4)], pool=4)  # needs 4.5
    text = str(err.value)
    assert "4.50 GiB in all" in text and "4.40 GiB is available" in text
    assert "--dtype bfloat16" in text and "bigger" in text


def test_available_memory_is_the_smaller_of_meminfo_and_the_cgroups_room(tmp_path):
    (tmp_path / "meminfo").write_text("MemTotal: 24000000 kB\nMemAvailable: 20000000 kB\n")
    cgroup = tmp_path / "cg"
    cgroup.mkdir()
    assert memory.available_bytes("cpu", tmp_path / "meminfo", cgroup) == 20000000 * 1024
    (cgroup / "memory.max").write_text("8589934592\n")
    (cgroup / "memory.current").write_text("1073741824\n")
    assert memory.available_bytes("cpu", tmp_path / "meminfo", cgroup) == 7 * GIB
    (cgroup / "memory.max").write_text("max\n")
    assert memory.available_bytes("cpu", tmp_path / "meminfo", cgroup) == 20000000 * 1024


def test_cache_and_context_from_the_config():
    gpt2 = tiny_models.model("gpt2", 320).config  # 3 layers, 32 wide, 128 positions
    assert memory.context_length(gpt2) == 128
    assert memory.cache_bytes(gpt2, 4) == 6 * 128 * 3 * 2 * 32 * 4
    llama = tiny_models.model("llama", 320).config  # 2 of 4 heads for keys and values, head 8 wide
    assert memory.cache_bytes(llama, 2, rows=1) == 128 * 3 * 2 * 2 * 8 * 2


def sizes_of(dirs):
    """The plan's parts for this model set, from a load with memory to spare."""
    ms = model_set.load(tiny_models.preset(dirs), pool=4, available={"cpu": 64 * GIB})
    d = ms.plan.devices[0]
    return ms, d.bank + d.runtime, d.slice_bytes


def test_a_small_device_gets_a_smaller_pool_and_the_comparison_reuses_it(gpt2_dirs):
    roomy, fixed, one = sizes_of(gpt2_dirs)
    assert roomy.plan.pool == 4 and one == roomy.bank.slice_nbytes
    ms = model_set.load(tiny_models.preset(gpt2_dirs), pool=4, available={"cpu": fixed + 2 * one + one // 2})
    assert ms.plan.pool == 2 and ms.bank.variants[3:] == ["pool0", "pool1"]
    assert "pool        2 of 4 slices asked" in ms.summary()
    # Five distinct TIES settings in a row: the pool stays at its two planned slices, each re-merged in turn.
    comparison = Comparison(ms, answer_cache=0)
    gen = ms.preset.generation
    footers = []
    for density in (0.2, 0.35, 0.5, 0.65, 0.8):
        c = Controls(question="Başkent neresi?", ties_density=density, max_new_tokens=2)
        request = Request(c.question, ("ties",), merge_specs(c), generation_settings(c, gen))
        ties = list(comparison.run(request))[-1].columns["ties"]
        assert ties.done and ties.merge_ms
        footers.append(views.column_footer(ties, c.question, "en"))
    # From the third setting on, each merge wrote over the least recently used one, and its footer says so.
    said = ["least recently used setting (one of 2)" in f for f in footers]
    assert said == [False, False, True, True, True], footers
    assert comparison.pool.size == 2 and len(ms.bank.variants) == 5
    # The least recently used slice was re-merged each time: the two last settings are the ones held.
    last_two = [merge_specs(Controls(question="q", ties_density=d))["ties"] for d in (0.65, 0.8)]
    assert sorted(map(str, (s.spec for s in comparison.pool.slots))) == sorted(map(str, last_two))


def test_too_small_a_device_is_refused_and_check_prints_the_plan(gpt2_dirs, monkeypatch, capsys):
    _, fixed, one = sizes_of(gpt2_dirs)
    with pytest.raises(memory.MemoryPlanError, match="not enough memory on cpu"):
        model_set.load(tiny_models.preset(gpt2_dirs), available={"cpu": fixed + one // 2})
    flags = ["--base", str(gpt2_dirs["base"]), "--model1", str(gpt2_dirs["model1"]), "--model2",
             str(gpt2_dirs["model2"]), "--device", "cpu", "--prompt-format", "plain_qa", "--check"]
    monkeypatch.setattr(memory, "available_bytes", lambda d: fixed + 3 * one + one // 2)
    assert app.main(flags) == 0
    out = capsys.readouterr().out
    assert "memory plan   cpu:" in out and "pool        3 of 4 slices asked" in out and ": fits" in out
    monkeypatch.setattr(memory, "available_bytes", lambda d: fixed)
    assert app.main(flags) == 2
    err = capsys.readouterr().err
    assert "harman: not enough memory on cpu" in err and "--dtype bfloat16" in err


def test_a_float32_cpu_bank_plans_its_packed_copies():
    big = tiny_models.wide_gpt2()  # its attention weights are packed once 6 rows read them
    found = model_set.plan_memory(big, torch.float32, 4, {"cpu": 64 * GIB})
    assert found.packed and found.devices[0].packed_per_slice >= 3 * 2**20
    assert model_set.plan_memory(big, torch.bfloat16, 4, {"cpu": 64 * GIB}).devices[0].packed_per_slice == 0
