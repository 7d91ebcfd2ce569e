"""Functions of packages the GPU bundle does not carry: importable, failing when called."""


def missing(qualified_name):
    def call(*args, **kwargs):
        raise NotImplementedError(
            f"{qualified_name} is not in the GPU bundle (pycaffe imports it at `import caffe`; "
            "the GPU check never calls it); run this in the repository's .venv instead")
    call.__name__ = qualified_name.rsplit(".", 1)[-1]
    return call
