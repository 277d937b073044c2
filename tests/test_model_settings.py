"""One settings schema for model/tfbert.json, the SavedModel's metadata.json and compact/tfbert.json."""

import json

from tfbert.model_settings import SETTINGS_FILE, ModelSettings


def test_settings_round_trip_with_the_keys_a_file_adds(tmp_path):
    settings = ModelSettings(labels=["neg", "pos", "ポジ"], max_length=64, truncation="head_tail",
                             word_tokenizer="mecab", uses_token_type_ids=True, head_hidden_size=8, left_out_layers=[1])
    path = settings.write(tmp_path, format="tflite")
    assert path == tmp_path / SETTINGS_FILE
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["format"] == "tflite" and "ポジ" in path.read_text(encoding="utf-8")  # readable, not escaped
    assert ModelSettings.read(tmp_path) == settings
    assert ModelSettings.read(tmp_path / "sub", "metadata.json") == ModelSettings()  # no file: the defaults


def test_files_written_before_the_schema_still_read(tmp_path):
    # model/tfbert.json before: four keys, no labels; compact/tfbert.json: a format key; metadata.json: many more.
    (tmp_path / SETTINGS_FILE).write_text(json.dumps({"max_length": 32, "truncation": "tail", "head_hidden_size": 8,
                                                      "word_tokenizer": None}), encoding="utf-8")
    old = ModelSettings.read(tmp_path)
    assert (old.max_length, old.truncation, old.head_hidden_size, old.labels) == (32, "tail", 8, [])
    metadata = {"labels": ["a", "b"], "max_length": 16, "truncation": "head", "in_graph_tokenization": True,
                "signatures": {"predict_ids": {}}, "version": 3, "uses_token_type_ids": False}
    settings = ModelSettings.from_json(metadata)
    assert (settings.labels, settings.uses_token_type_ids, settings.left_out_layers) == (["a", "b"], False, [])


def test_find_settings_reads_each_folder_kind(tmp_path):
    from tfbert.model_settings import EXPORT_METADATA, find_settings

    run = tmp_path / "run"
    ModelSettings(labels=["a", "b"], text_pairs=True).write(run / "model")
    ModelSettings(labels=["a", "b"], left_out_layers=[3], text_pairs=True).write(run / "compact", format="tflite")
    for version, max_length in (("1", 16), ("2", 32), ("10", 64)):
        ModelSettings(labels=["a", "b"], max_length=max_length, text_pairs=False).write(
            run / "saved_model" / version / EXPORT_METADATA.parent, EXPORT_METADATA.name, signatures={})
        (run / "saved_model" / version / "saved_model.pb").write_bytes(b"")  # what makes it a version
    ModelSettings(max_length=128).write(run / "saved_model" / "11" / EXPORT_METADATA.parent, EXPORT_METADATA.name)
    assert find_settings(run).labels == ["a", "b"] and find_settings(run).text_pairs is True  # model/
    assert find_settings(run / "model").text_pairs is True
    assert find_settings(run / "compact").left_out_layers == [3]
    assert find_settings(run / "saved_model").max_length == 64  # the newest version, by number
    assert find_settings(run / "saved_model" / "2").max_length == 32
    assert find_settings(tmp_path / "nothing") is None and find_settings(tmp_path) is None
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "tfbert.json").write_text('{"labels": ["x"]}')
    assert find_settings(tmp_path / "old").text_pairs is None  # written before the record
