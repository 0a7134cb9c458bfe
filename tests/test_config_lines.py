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
    lines = {("model",): 3, ("model", "dropout"): 4, ("model", "mlp"): 5, ("model", "mlp", "x"): 5, ("out",): 1,
             ("training",): 7}
    given = unless_set(lines, {"model": {"mlp": [8]}, "out": "m", "training": {"epochs": 0}})
    assert given == {("model",): 3, ("model", "dropout"): 4, ("model", "mlp"): None, ("model", "mlp", "x"): None,
                     ("out",): None, ("training",): 7, ("training", "epochs"): None}
    assert line_of(given, ("model", "mlp", 0)) is None  # not the line of the section around it
    assert line_of(given, ("training", "epochs")) is None  # a flag's key the file does not set: not its section's line


def test_a_yaml_key_given_twice_is_found_where_its_loaded_value_is(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("training:\n  epochs: 2\nmodel:\n  name: fm\ntraining:\n  epochs: x\n")
    assert key_lines(path)[("training", "epochs")] == 6


def test_toml_multi_line_strings_are_passed_over_and_arrays_of_tables_are_tables(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[data]\nnote = """\n[training]\nepochs = 1\n"""\n[training]\nepochs = 0\n[[runs]]\nseed = 3\n')
    lines = key_lines(path)
    assert lines[("training",)] == 6 and lines[("training", "epochs")] == 7
    assert lines[("runs", "seed")] == 9 and ("data", "seed") not in lines
