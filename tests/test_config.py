import pytest

from tfbert.config import parse_split_ratio, parse_train_args
from tfbert.errors import TfbertError


def test_defaults_and_flags():
    config = parse_train_args(["--epochs", "2", "--lr", "3e-5", "--freeze_encoder", "--head_hidden_size", "16"])
    assert config.training.epochs == 2
    assert config.training.lr == pytest.approx(3e-5)
    assert config.model.freeze_encoder is True and config.model.head_hidden_size == 16
    assert config.data.max_length == 128 and config.training.batch_size == 32


def test_split_ratio():
    assert parse_split_ratio("8:1:1") == (0.8, 0.1, 0.1)
    assert parse_split_ratio("3:1:0") == (0.75, 0.25, 0.0)
    with pytest.raises(TfbertError, match="--split_ratio"):
        parse_split_ratio("8:2")


def test_every_problem_is_reported_at_once():
    with pytest.raises(TfbertError) as error:
        parse_train_args(["--epochs", "0", "--batch_size", "0", "--max_length", "4"])
    message = str(error.value)
    assert "--epochs" in message and "--batch_size" in message and "--max_length" in message


def test_conflicting_sources():
    with pytest.raises(TfbertError, match="either --dataset or --train_file"):
        parse_train_args(["--dataset", "ag_news", "--train_file", "x.csv"])
    with pytest.raises(TfbertError, match="need --train_file"):
        parse_train_args(["--test_file", "x.csv"])


def test_mlp_head_needs_frozen_encoder():
    with pytest.raises(TfbertError, match="--head_hidden_size needs --freeze_encoder"):
        parse_train_args(["--head_hidden_size", "8"])


def test_export_precision_follows_bfloat16_training_unless_given():
    from tfbert.runtime import resolve_export_precision

    assert resolve_export_precision("auto", "mixed_bfloat16") == "mixed_bfloat16"
    assert resolve_export_precision("auto", "float32") == "float32"
    assert resolve_export_precision("auto", "mixed_float16") == "float32"  # CPUs emulate float16
    assert resolve_export_precision("float32", "mixed_bfloat16") == "float32"
    assert resolve_export_precision("bfloat16", "float32") == "mixed_bfloat16"


def test_export_weights_are_variables_unless_constants_are_asked_for():
    from tfbert.runtime import resolve_export_weights

    assert parse_train_args(["--dataset", "sms_spam"]).training.export_weights == "auto"
    assert resolve_export_weights("auto") == "variables"
    assert resolve_export_weights("constants") == "constants"
    assert resolve_export_weights("variables") == "variables"


def test_new_performance_flags_are_checked():
    from tfbert.config import parse_train_args
    from tfbert.errors import TfbertError

    config = parse_train_args(["--grad_accum_steps", "4", "--pad_to_multiple_of", "8", "--fused_ops", "off"])
    assert (config.training.grad_accum_steps, config.training.pad_to_multiple_of, config.training.fused_ops) == (4, 8, "off")
    for flags, named in ((["--grad_accum_steps", "0"], "--grad_accum_steps"),
                         (["--pad_to_multiple_of", "-1"], "--pad_to_multiple_of")):
        with pytest.raises(TfbertError, match=named):
            parse_train_args(flags)


@pytest.mark.parametrize("flags, given, jax_run, tensorflow_run", [
    ([], "auto", False, True),
    (["--export_tflite"], "on", True, True),  # a bare switch, as before it took a value
    (["--export_tflite", "off"], "off", False, False),
    (["--export-tflite", "on", "--epochs", "1"], "on", True, True),
])
def test_the_compact_export_is_on_by_default_except_on_jax(flags, given, jax_run, tensorflow_run):
    from tfbert.runtime import resolve_compact_export

    requested = parse_train_args(flags).training.export_tflite
    assert requested == given
    assert (resolve_compact_export(requested, "jax"), resolve_compact_export(requested)) == (jax_run, tensorflow_run)
    # config.json of runs from before auto recorded a switch
    assert (resolve_compact_export(True, "tensorflow"), resolve_compact_export(False, "tensorflow")) == (True, False)


def test_compact_layer_flags():
    config = parse_train_args(["--compact_layers", "all", "--compact_max_f1_drop", "0.01"])
    assert (config.training.compact_layers, config.training.compact_max_f1_drop) == ("all", 0.01)
    assert parse_train_args([]).training.compact_layers == "all"
    for value in ("-0.1", "1"):
        with pytest.raises(TfbertError, match="--compact_max_f1_drop must be in"):
            parse_train_args(["--compact_max_f1_drop", value])


def test_data_flags_are_checked_together():
    config = parse_train_args(["--columns", "label,text", "--max_train_samples", "100", "--max_eval_samples", "20"])
    assert (config.data.columns, config.data.max_train_samples, config.data.max_eval_samples) == ("label,text", 100, 20)
    with pytest.raises(TfbertError) as error:
        parse_train_args(["--columns", "a,b,b", "--max_train_samples", "0", "--max_eval_samples", "-1"])
    message = str(error.value)
    for named in ("--max_train_samples", "--max_eval_samples", "distinct", "no 'text' column", "--label_column"):
        assert named in message, named
    assert parse_train_args(["--columns", "_,body,label", "--text_column", "body"]).data.text_column == "body"


def test_infer_and_serve_flags_collect_every_problem():
    from tfbert.cli import parse_infer_args, parse_serve_args

    config = parse_infer_args(["--json", "a title", "--text_pair", "its body", "--top_k", "2"])
    assert (config.texts, config.text_pair, config.json, config.top_k) == (["a title"], ["its body"], True, 2)
    with pytest.raises(TfbertError) as error:
        parse_infer_args(["", "x", "--top_k", "0", "--text_pair", "p", "--model", "m", "--server", "http://h"])
    for named in ("--top_k", "--text_pair given 1 time(s) for 2", "text 1 on the command line is empty",
                  "--model or --server"):
        assert named in str(error.value), named
    assert parse_serve_args(["--port", "9000", "--verbose"]).port == 9000
    with pytest.raises(TfbertError) as error:
        parse_serve_args(["--port", "0", "--max_batch", "0", "--max_body_bytes", "0", "--model_name", "a/b"])
    for named in ("--port must be in 1-65535", "--max_batch", "--max_body_bytes", "--model_name 'a/b'"):
        assert named in str(error.value), named
    with pytest.raises(TfbertError, match="--port"):
        parse_serve_args(["--port", "70000"])
    assert parse_serve_args([]).batching == "on" and parse_serve_args([]).batch_timeout_ms == 5.0
    for bad in ("-1.0", "1001.0", "nan"):
        with pytest.raises(TfbertError, match=f"--batch_timeout_ms {bad}: give 0-1000"):
            parse_serve_args(["--batch_timeout_ms", bad])


def test_an_unknown_argument_is_argparses_one_line_error_not_a_traceback(capsys):
    from tfbert.cli import parse_serve_args

    for parse in (parse_train_args, parse_serve_args):
        with pytest.raises(SystemExit) as stopped:
            parse(["--port_number", "8501"] if parse is parse_serve_args else ["--learning_rate", "3e-5", "&"])
        assert stopped.value.code == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert "unrecognized arguments:" in error and ("--port_number" in error or "--learning_rate 3e-5 &" in error)
