"""Digest of what a set of runs computed, to check a refactoring changed no number.

    python benchmarks/bitwise.py run OUT      # reproduce --preset smoke (every study) + a small analyze
    python benchmarks/bitwise.py digest OUT   # one SHA-256 per file (timing fields dropped)
    python benchmarks/bitwise.py compare A.json B.json

Digests: every metrics/telemetry/history line without its wall-clock fields, every JSON result
(bleu.json, analysis.json, claims.json, ...) without times and paths, every checkpoint's
tensors (by name, bytes), every hypothesis file. Reports and HTML (which carry times) are left
out: they are made from the digested files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

TIME_KEYS = {"time", "wall", "elapsed", "seconds", "wps", "ups", "tokens_per_s", "updates_per_s", "sentences_per_s"}
SKIP_SUFFIXES = {".html", ".md", ".png", ".lock", ".log", ".pid"}
MACHINE_KEYS = {"tokenizer_sha256", "entry", "commit", "init_from", "config"}
"""Values that name this machine's files rather than what was computed: the tokenizer file's
hash (SentencePiece writes its temporary training path into the model), the cache entry named
after it, the commit, absolute paths. The vocabulary itself is digested (pieces, scores)."""
STUDIES = "fig2,fig3,fig4,fig5,lr,lr-mlm,placements"


def _clean(obj):
    """Drop wall-clock and machine-dependent values (times, paths, versions) recursively."""
    if isinstance(obj, dict):
        return {
            k: _clean(v)
            for k, v in obj.items()
            if not any(t in k.lower() for t in TIME_KEYS)
            and k not in {"started", "finished", "host", "pid", "path", "run", "python", "torch", "command", "argv"}
            and k not in MACHINE_KEYS
        }
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    if isinstance(obj, str) and obj.startswith("/"):
        return "<path>"
    return obj


def _digest_file(p: Path) -> str | None:
    if p.suffix in SKIP_SUFFIXES or p.name in {"status.json", "manifest.json", "env.json", ".lock", "digest.json"}:
        return None  # manifest.json: hashes of the checkpoint's files, which are digested themselves
    h = hashlib.sha256()
    if p.name == "spm.model":
        from sentencepiece import sentencepiece_model_pb2

        proto = sentencepiece_model_pb2.ModelProto.FromString(p.read_bytes())
        h.update(json.dumps([(x.piece, x.score, x.type) for x in proto.pieces]).encode())
        h.update(proto.normalizer_spec.SerializeToString())
    elif p.suffix == ".toml":
        h.update(re.sub(rb'"/[^"]*"', b'"<path>"', p.read_bytes()))
    elif p.suffix == ".pt":
        import torch

        state = torch.load(p, map_location="cpu", weights_only=False)
        _hash_tree(h, state)
    elif p.suffix == ".jsonl":
        for line in p.read_text().splitlines():
            if line.strip():
                h.update(json.dumps(_clean(json.loads(line)), sort_keys=True).encode())
    elif p.suffix == ".json":
        h.update(json.dumps(_clean(json.loads(p.read_text())), sort_keys=True).encode())
    else:
        h.update(p.read_bytes())
    return h.hexdigest()


def _hash_tree(h, obj, prefix: str = "") -> None:
    import torch

    if isinstance(obj, torch.Tensor):
        h.update(prefix.encode() + str(obj.dtype).encode() + obj.detach().contiguous().numpy().tobytes())
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            _hash_tree(h, obj[k], f"{prefix}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _hash_tree(h, v, f"{prefix}.{i}")
    else:
        h.update(prefix.encode() + json.dumps(_clean(obj), sort_keys=True, default=str).encode())


def digest(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and "tokenizer" not in p.parts and "tensorboard" not in p.parts:
            d = _digest_file(p)
            if d is not None:
                out[str(p.relative_to(root))] = d
    return out


def run(out: Path, parts: tuple[str, ...] = ()) -> None:
    """``parts``: ("analysis",) runs only the analysis."""
    env = dict(os.environ)
    py = sys.executable
    subprocess.run(
        [py, "-m", "preln", "reproduce", "--preset", "smoke", "--studies", STUDIES, "--out", str(out / "smoke")],
        check=True,
        env=env,
    )
    small = ["d_model=64", "d_ffn=128", "layers=2", "seeds=1", "depths=[2,3,4]", "depth_seeds=2", "widths=[32,48,64]"]
    small += ["width_seeds=2", "lemma_d=64", "lemma_seeds=2", "warmup_updates=5"]
    analyze = [py, "-m", "preln", "analyze", "--placements", "post,pre,admin", "--out", str(out / "analysis")]
    analyze += [a for s in small for a in ("--set", s)]
    subprocess.run(analyze, check=True, env=env)


def main() -> None:
    cmd, path = sys.argv[1], Path(sys.argv[2])
    if cmd == "run":
        run(path, tuple(sys.argv[3:]))
        (path / "digest.json").write_text(json.dumps(digest(path), indent=1))
    elif cmd == "digest":
        print(json.dumps(digest(path), indent=1))
    elif cmd == "compare":
        a, b = json.loads(path.read_text()), json.loads(Path(sys.argv[3]).read_text())
        diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        print(f"{len(a)} vs {len(b)} files; {len(diff)} differ")
        for k in diff[:50]:
            print("  ", k, "only in one" if (k in a) != (k in b) else "")
        sys.exit(1 if diff else 0)


if __name__ == "__main__":
    main()
