"""Drop stored face pixels from every record of the results store (book issue: no image in
any record). Records keep ``attention_index`` (indices into the test split); the notebooks
read the faces from the dataset at build time.

    python scripts/strip_record_images.py [--root results] [--dry-run]
"""

from __future__ import annotations

import argparse
import datetime as dt

from cfdan import paths, results

IMAGE_KEYS = ("attention_images",)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=None, help="results store (default: the project's)")
    ap.add_argument("--dry-run", action="store_true", help="list what would change")
    args = ap.parse_args(argv)
    note = (f"{dt.date.today().isoformat()}: arrays {', '.join(IMAGE_KEYS)} (test-split face "
            "pixels) removed from the .npz; attention_index still names the faces. No outcome "
            "field changed.")
    n = 0
    for path in sorted(paths.results_dir(args.root).glob("*/*.json")):
        npz = path.with_suffix(".npz")
        if not npz.is_file():
            continue
        if args.dry_run:
            import numpy as np

            with np.load(npz) as z:
                hit = [k for k in IMAGE_KEYS if k in z.files]
            if hit:
                print(f"would drop {hit} from {npz}")
                n += 1
            continue
        gone = results.drop_arrays(path, IMAGE_KEYS, note)
        if gone:
            print(f"dropped {gone} from {npz}")
            n += 1
    print(f"{n} record(s) {'to change' if args.dry_run else 'changed'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
