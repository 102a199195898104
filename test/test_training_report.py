"""Training-curve report: a warm-started run's curve continues the run it started from."""

import json

from perception_core.training.report import plot_histories, run_history

FIELDS = "step,total,seg,det,heatmap,wh,offset,w_seg,w_det,lr,sec_per_step"


def write_run(folder, rows, init_from=None):
    folder.mkdir()
    (folder / "history.csv").write_text("\n".join([FIELDS] + [f"{s},{v},{v},{v},,,,1,1,0.001,1.0" for s, v in rows]))
    settings = {"init_from": {"run": str(init_from)}} if init_from else {}
    (folder / "config.json").write_text(json.dumps({"settings": settings}))
    return folder


def test_stages_are_chained_with_steps_counted_on(tmp_path):
    first = write_run(tmp_path / "first", [(10, 3.0), (20, 2.0)])
    second = write_run(tmp_path / "second", [(10, 1.5), (20, 1.0)], init_from=first)
    history, starts = run_history(second)
    assert history["step"] == [10, 20, 30, 40] and history["total"] == [3.0, 2.0, 1.5, 1.0]
    assert starts == [20]
    plot_histories([second], str(tmp_path / "curves.png"))
    assert (tmp_path / "curves.png").stat().st_size > 10_000
