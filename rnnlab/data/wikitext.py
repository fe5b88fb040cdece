"""TFDS builder for WikiText-2 and WikiText-103 (Merity et al. 2016), word level ("-v1", with
<unk>; the raw variants are not included).

    tfds.builder("rnnlab_wikitext/wikitext2")
    tfds.builder("rnnlab_wikitext/wikitext103")

Imported by `rnnlab.data.text.import_tfds` (it imports TensorFlow). One example per line
(newline included) with its line number `index`, as in `rnnlab.data.ptb`.

Offline: place `wiki.train.tokens`, `wiki.valid.tokens`, `wiki.test.tokens` in the manual dir
(`<download_dir>/manual/`), directly or in the archive's folder (`wikitext-2/`,
`wikitext-103/`), or the archive itself (`wikitext-2-v1.zip`, `wikitext-103-v1.zip`).

Checksums: the archives' MD5s (542ccefacc6c27f945fb54453812b3cd for WikiText-2,
9ddaacaf6af0710eda8c456decff7832 for WikiText-103) are those published with torchtext's
loaders and are checked after download; they could not be verified here (no network), nor could
the mirrors below, and no SHA-256 is registered with TFDS.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from rnnlab.data.ptb import check_md5

# config -> (archive name, folder inside the archive, archive MD5)
ARCHIVES = {
    "wikitext2": ("wikitext-2-v1.zip", "wikitext-2", "542ccefacc6c27f945fb54453812b3cd"),
    "wikitext103": ("wikitext-103-v1.zip", "wikitext-103", "9ddaacaf6af0710eda8c456decff7832"),
}
MIRRORS = ("https://wikitext.smerity.com/",
           "https://s3.amazonaws.com/research.metamind.io/wikitext/")
FILES = {"train": "wiki.train.tokens", "validation": "wiki.valid.tokens",
         "test": "wiki.test.tokens"}


def _find_in(folder) -> dict | None:
    paths = {s: epath.Path(folder) / f for s, f in FILES.items()}
    return paths if all(p.exists() for p in paths.values()) else None


def find_manual_files(manual_dir, config: str):
    """Split -> path of the token files in `manual_dir` ({} = the archive is there), or None."""
    if not manual_dir or not epath.Path(manual_dir).is_dir():
        return None
    archive, folder, _ = ARCHIVES[config]
    manual_dir = epath.Path(manual_dir)
    for d in (manual_dir, manual_dir / folder):
        if found := _find_in(d):
            return found
    return {} if (manual_dir / archive).exists() else None


class RnnlabWikitext(tfds.core.GeneratorBasedBuilder):
    """WikiText-2 (2M train tokens, 33k vocabulary) and WikiText-103 (103M, 267k)."""

    name = "rnnlab_wikitext"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="wikitext2", description="WikiText-2 (v1, tokenised)."),
        tfds.core.BuilderConfig(name="wikitext103", description="WikiText-103 (v1, tokenised)."),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Optional (used instead of downloading when present): place wiki.train.tokens, "
        "wiki.valid.tokens and wiki.test.tokens (or wikitext-2-v1.zip / wikitext-103-v1.zip, "
        "or the archive's folder) in the manual dir, <download_dir>/manual/ by default.")

    def _info(self):
        return self.dataset_info_from_configs(
            description="WikiText language-modelling corpora (Merity et al. 2016), one example "
                        "per line.",
            features=tfds.features.FeaturesDict({
                "text": tfds.features.Text(),
                "index": tfds.features.Scalar(dtype=np.int64),
            }),
            supervised_keys=None,
            homepage="https://blog.salesforceairesearch.com/"
                     "the-wikitext-long-term-dependency-language-modeling-dataset/",
            citation="Merity, Xiong, Bradbury & Socher 2016, Pointer Sentinel Mixture Models.",
        )

    def _split_generators(self, dl_manager):
        config = self.builder_config.name
        archive, folder, md5 = ARCHIVES[config]
        try:
            manual = epath.Path(dl_manager.manual_dir)
        except Exception:  # manual dir unset, missing or empty
            manual = None
        found = find_manual_files(manual, config)
        if not found:
            if found == {}:
                zip_path = manual / archive
            else:
                zip_path, errors = None, []
                for mirror in MIRRORS:
                    try:
                        zip_path = epath.Path(dl_manager.download(mirror + archive))
                        break
                    except Exception as e:  # try the next mirror
                        errors.append(f"{mirror + archive}: {type(e).__name__}: {e}")
                if zip_path is None:
                    raise RuntimeError("could not download " + archive + ":\n" +
                                       "\n".join(errors))
            if zip_path.is_file():  # (TFDS's test mocks return a directory)
                check_md5(zip_path, md5, archive)
                zip_path = epath.Path(dl_manager.extract(zip_path))
            found = _find_in(zip_path / folder) or _find_in(zip_path)
            if not found:
                raise FileNotFoundError(f"no {sorted(FILES.values())} in {zip_path}")
        return {split: self._generate_examples(path) for split, path in found.items()}

    def _generate_examples(self, path):
        with epath.Path(path).open(encoding="utf-8") as f:
            for i, line in enumerate(f):
                yield i, {"text": line, "index": i}
