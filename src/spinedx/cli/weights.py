"""``spinedx weights``: which ImageNet weights are available and where (see :mod:`spinedx.models.weights`)."""

from __future__ import annotations

import typer

from spinedx.cli._app import command


@command("weights")
def weights(
    backbone: list[str] = typer.Option(None, "--backbone", "-b",
                                       help="Backbone(s) to show (default: resnet50, resnet18, resnet34, resnet101)."),
    download: bool = typer.Option(False, "--download",
                                  help="Download the missing files of the listed backbones (needs the network)."),
) -> None:
    """List torchvision's ImageNet files per backbone: expected cache path, present or not, size, URL.

    Nothing is downloaded unless --download is given. `spinedx cv --pretrained imagenet` downloads a missing
    file itself; `--pretrained auto` (the default) never does and trains from scratch when the file is absent.
    """
    from spinedx.models.weights import LISTED_BACKBONES, MIRROR_ENV, cache_dir, download_imagenet, weights_status

    names = tuple(backbone) if backbone else LISTED_BACKBONES
    if download:
        for b in names:
            download_imagenet(b)
    typer.echo(f"cache: {cache_dir()}  (set TORCH_HOME to move it; {MIRROR_ENV} to use a mirror)")
    for st in weights_status(names):
        state = f"present, {st.size_mb} MB" if st.present else "absent"
        typer.echo(f"{st.backbone:<10} {state:<18} {st.path}")
        if not st.present:
            typer.echo(f"{'':<10} from {st.url}")
