"""experiments/bench/_profile (profile_step): HLO metadata parsing and per-op aggregation, by hand."""

from experiments.bench import _profile as profile_step

HLO = """
ENTRY %main.1 (p: f32[2,3]) -> f32[2,4] {
  %copy.3 = f32[4,4]{1,0} copy(%w)
  %ynn_fusion.2 = f32[2,4]{1,0} fusion(%p, %copy.3), kind=kCustom, calls=%fc, metadata={op_name="jit(step)/Dense_0/dot_general" stack_frame_id=3}
  ROOT %add_maximum_fusion = f32[2,4]{1,0} fusion(%ynn_fusion.2), kind=kLoop, metadata={op_name="jit(step)/relu/max"}
}
"""


def test_hlo_ops_reads_shape_and_source():
    ops = profile_step.hlo_ops(HLO)
    assert ops == {"copy.3": ("f32[4,4]{1,0}", "copy"),  # no metadata: the opcode
                   "ynn_fusion.2": ("f32[2,4]{1,0}", "jit(step)/Dense_0/dot_general"),
                   "add_maximum_fusion": ("f32[2,4]{1,0}", "jit(step)/relu/max")}


def test_per_op_times_sums_threads_and_ignores_other_events():
    ops = profile_step.hlo_ops(HLO)
    events = [("ynn_fusion.2", 3000), ("ynn_fusion.2", 1000),  # two threads
              ("add_maximum_fusion", 2000), ("ThunkExecutor::Execute", 99000), ("copy.3", 5)]
    rows = profile_step.per_op_times(events, ops, steps=2)
    assert [r["op"] for r in rows] == ["ynn_fusion.2", "add_maximum_fusion", "copy.3"]
    assert rows[0]["us_per_step"] == 2.0 and rows[1]["us_per_step"] == 1.0
    assert rows[2]["us_per_step"] == 0.0025
    assert abs(rows[0]["share"] - 4000 / 6005) < 1e-12
    assert rows[0]["source"] == "jit(step)/Dense_0/dot_general"
