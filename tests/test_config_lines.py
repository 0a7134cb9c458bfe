"""Where a config file sets each key: what puts ``file:line`` on a setting that fails validation."""

from deepfm.config_lines import key_lines, line_of, unless_set


def test_toml_keys_are_found_under_their_tables_dotted_and_quoted_keys_included(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('out = "m"\n\n[model]\nname = "deepfm"\n  "embed_dim" = 4  # indented, quoted\n'
                    'mlp = [\n  16,\n  16,\n]\n[ training ]\noptimizer.lr = 1\n')
    lines = key_lines(path)
    assert lines[("out",)] == 1
    assert lines[("model",)] == 3
    assert lines[("model", "embed_dim")] == 5
    assert lines[("model", "mlp")] == 6
    assert lines[("training", "optimizer", "lr")] == 11
    assert lines[("training", "optimizer")] == 11
    assert ("16,",) not in lines and len([k for k in lines if k[0] == "model"]) == 4


def test_yaml_keys_are_found_at_their_lines(tmp_path):
    path = tmp_path / "run.yml"
    path.write_text("out: m\nmodel:\n  name: deepfm\n\n  embed_dim: four\ntraining: {lr: 2}\n")
    assert key_lines(path) == {("out",): 1, ("model",): 2, ("model", "name"): 3, ("model", "embed_dim"): 5,
                               ("training",): 6, ("training", "lr"): 6}


def test_a_location_inside_a_key_falls_back_to_the_nearest_key_set():
    lines = {("model",): 3, ("model", "mlp"): 6}
    assert line_of(lines, ("model", "mlp", 1)) == 6
    assert line_of(lines, ("model", "dropout")) == 3
    assert line_of(lines, ("training", "lr")) is None
    assert line_of(lines, ()) is None


def test_keys_a_flag_sets_lose_their_line_and_so_do_the_keys_inside_them():
    lines = {("model",): 3, ("model", "dropout"): 4, ("model", "mlp"): 5, ("model", "mlp", "x"): 5, ("out",): 1}
    given = unless_set(lines, {"model": {"mlp": [8]}, "out": "m"})
    assert given == {("model",): 3, ("model", "dropout"): 4, ("model", "mlp"): None, ("model", "mlp", "x"): None,
                     ("out",): None}
    assert line_of(given, ("model", "mlp", 0)) is None  # not the line of the section around it
