"""The container images the product references, built here with umoci: no docker, no registry.

- builder.py: the generic machinery: `Recipe`, rootfs staging, the umoci build, the content-keyed
  tarball cache (`ensure`), importing into containerd;
- recipes.py: the images themselves (pause, goflow2, the python substitute, the Caretta stand-in,
  Prometheus and the Operator, netviz itself), each a small declarative `Recipe`; `ensure_images(lab)`;
- venv_pack.py: the pipeline's code and virtualenv packed into the netviz-pipeline image.

What runs inside the images comes from netviz_lab/shipped/ (the stand-in, pause.c). The names below
are re-exported so `from netviz_lab import images; images.ensure_images(lab)` works as before. They are
bound at import: to replace one in a test, patch the submodule that uses it (e.g. the recipes module's
`STANDIN`, `builder._build`), not this package.
"""
from __future__ import annotations

from .builder import (
    EPOCH,
    EPOCH_RFC3339,
    PATH_ENV,
    Image,
    ImageBuildError,
    Recipe,
    Rootfs,
    cache_key,
    debian_versions,
    describe,
    ensure,
    import_images,
    ldd,
    manifest_digest,
    normalize,
    owners,
    present_images,
    sha256_text,
)
from .recipes import (
    DYNLOAD_DROP,
    HOST_PYTHON,
    HOST_STDLIB,
    PAUSE_C,
    PIPELINE_NAME,
    PIPELINE_REPO,
    PYTHON_PASSWD,
    RECIPE_VERSION,
    STANDIN,
    STDLIB_DROP,
    ensure_images,
    pipeline_image_ref,
    pipeline_tag,
    prometheus_release,
    lab_recipes,
)
from .venv_pack import (
    PIPELINE_APP,
    PIPELINE_HOME,
    PIPELINE_SITE,
    PIPELINE_VENV,
    PIPELINE_VENV_SITE,
    PipelinePlan,
    launcher,
    pipeline_files,
    pipeline_plan,
    runtime_distributions,
)

__all__ = [
    "DYNLOAD_DROP", "EPOCH", "EPOCH_RFC3339", "HOST_PYTHON", "HOST_STDLIB", "PATH_ENV", "PAUSE_C", "PIPELINE_APP",
    "PIPELINE_HOME", "PIPELINE_NAME", "PIPELINE_REPO", "PIPELINE_SITE", "PIPELINE_VENV", "PIPELINE_VENV_SITE",
    "PYTHON_PASSWD", "RECIPE_VERSION", "STANDIN", "STDLIB_DROP", "Image", "ImageBuildError", "PipelinePlan",
    "Recipe", "Rootfs", "cache_key", "debian_versions", "describe", "ensure", "ensure_images", "import_images",
    "launcher", "ldd", "manifest_digest", "normalize", "owners", "pipeline_files", "pipeline_image_ref",
    "pipeline_plan", "pipeline_tag", "present_images", "prometheus_release", "lab_recipes", "runtime_distributions",
    "sha256_text",
]
