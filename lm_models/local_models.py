"""A model in a local directory (or named by the path of its KenLM file), and the bundled
models (lm_models/bundled/NAME/)."""
from __future__ import annotations

from pathlib import Path

from lm_models.errors import ModelSourceError
from lm_models.model_layout import (DEFAULT_LANGUAGE, LM_SUFFIXES, MODEL_JSON, SP_SUFFIX,
                                    ModelFiles, check_file_name, files_from_model_json,
                                    read_model_json, split_lm_file)

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"


def bundled_names() -> list[str]:
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / MODEL_JSON).is_file())


def resolve_local(source: str, path: Path) -> ModelFiles:
    """Files of a model in a local directory (or named by the path of its KenLM file)."""
    if path.is_file():
        split = split_lm_file(path.name)
        if split is None:
            raise ModelSourceError(
                f"model source {source!r}: {path} is neither a model directory nor a KenLM "
                f"file ({' / '.join('*' + s for s in LM_SUFFIXES)})")
        directory, wanted = path.parent, [path.name]
        lang = split[0]
    elif path.is_dir():
        directory, wanted, lang = path, [], DEFAULT_LANGUAGE
    else:
        raise ModelSourceError(f"model source {source!r}: no such directory or file {path} "
                               f"(bundled models: {', '.join(bundled_names()) or 'none'})")
    model_json, sp_name = None, None
    if (directory / MODEL_JSON).is_file():
        model_json = read_model_json(directory / MODEL_JSON, source)
        lm_name, json_sp_name = files_from_model_json(model_json)
        for name in (lm_name, json_sp_name):  # a model.json names files in its own directory
            if name is not None:
                check_file_name(name, source, f"its {MODEL_JSON}")
        if not wanted:  # a source naming its KenLM file picks that file over model.json's
            if lm_name:
                wanted = [lm_name]
                lang = (split_lm_file(lm_name) or (lm_name, ""))[0]
            sp_name = json_sp_name
    if not wanted:
        wanted = [lang + suffix for suffix in LM_SUFFIXES]
        if not any((directory / w).is_file() for w in wanted):
            # A directory with exactly one KenLM model of another language is unambiguous.
            found = sorted(p.name for p in directory.iterdir() if split_lm_file(p.name))
            if len(found) == 1:
                wanted = found
                lang = split_lm_file(found[0])[0]
    lm_path = next((directory / w for w in wanted if (directory / w).is_file()), None)
    if lm_path is None:
        raise ModelSourceError(f"model source {source!r}: no KenLM model in {directory} "
                               f"(looked for {', '.join(wanted)})")
    sp_path = directory / (sp_name or lang + SP_SUFFIX)
    return ModelFiles(source=source, directory=directory, lm_path=lm_path,
                      sp_path=sp_path if sp_path.is_file() else None, model_json=model_json)
