"""Built-in corpora: which stdlib files, in which order, docstring prose, and what they reject."""

import sys

import pyarrow.parquet as pq
import pytest

from idscaling import builtin
from idscaling.corpus import build_corpus
from idscaling.errors import ConfigError, DataError

CODEC = '""" Python Character Mapping Codec cp999 generated from X.TXT with gencodec.py.\n"""\n'


@pytest.fixture
def fake_stdlib(tmp_path):
    """A tiny stdlib tree with one of each thing that must be left out."""
    root = tmp_path / "lib" / "python3.11"
    files = {
        "os.py": '"""Operating system."""\nimport sys\n',
        "abc.py": "X = 1\n",
        "json/__init__.py": '"""JSON.\n\n    Indented line."""\n'
                            'class Decoder:\n    """Decode JSON."""\n'
                            '    def decode(self):\n        """Decode one."""\n'
                            'if True:\n    def helper():\n        """Helps."""\n',
        "encodings/cp999.py": CODEC,
        "encodings/utf_8.py": '"""UTF-8 codec."""\n',
        "test/test_os.py": '"""Tests."""\n',
        "json/tests/test_x.py": "pass\n",
        "idlelib/editor.py": "pass\n",
        "turtledemo/demo.py": "pass\n",
        "site-packages/thirdparty.py": "pass\n",
        "__pycache__/os.cpython-311.py": "pass\n",
        "config-3.11-x86_64-linux-gnu/python-config.py": "pass\n",
        "_sysconfigdata__linux.py": "build = {}\n",
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_stdlib_files_excludes_and_sorts(fake_stdlib):
    rel = [p.relative_to(fake_stdlib).as_posix() for p in builtin.stdlib_files(fake_stdlib)]
    assert rel == ["abc.py", "encodings/cp999.py", "encodings/utf_8.py", "json/__init__.py",
                   "os.py"]


def test_stdlib_documents_skip_generated_codecs(fake_stdlib):
    docs = list(builtin.python_stdlib_documents(fake_stdlib))
    assert docs == ["X = 1\n", '"""UTF-8 codec."""\n', (fake_stdlib / "json/__init__.py")
                    .read_text(), '"""Operating system."""\nimport sys\n']


def test_undecodable_stdlib_file_is_named(fake_stdlib):
    (fake_stdlib / "bad.py").write_bytes(b"x = '\xff'\n")
    with pytest.raises(DataError, match=r"bad\.py is not valid UTF-8 at byte offset 5"):
        list(builtin.python_stdlib_documents(fake_stdlib))


def test_module_docstrings_in_source_order():
    source = ('"""Top.\n\n    More."""\nclass A:\n    """Class A."""\n'
              '    def f(self):\n        """Method f."""\n'
              'try:\n    def g():\n        """Under try."""\nexcept ImportError:\n    pass\n'
              'def h():\n    pass\n')
    assert builtin.module_docstrings(source) == "Top.\n\nMore.\n\nClass A.\n\nMethod f.\n\nUnder try."
    assert builtin.module_docstrings(source, which="module") == "Top.\n\nMore."
    assert builtin.module_docstrings("x = 1\n") == ""


def test_python_docs_topics_then_modules(fake_stdlib):
    from pydoc_data.topics import topics

    docs = list(builtin.python_docs_documents(fake_stdlib))
    keys = sorted(topics)
    assert docs[:len(keys)] == [topics[k] for k in keys]
    assert docs[len(keys):] == ["UTF-8 codec.", "JSON.\n\nIndented line.\n\nDecode JSON.\n\n"
                                "Decode one.\n\nHelps.", "Operating system."]
    only_module = list(builtin.python_docs_documents(fake_stdlib, docstrings="module"))
    assert only_module[len(keys):] == ["UTF-8 codec.", "JSON.\n\nIndented line.",
                                       "Operating system."]
    with pytest.raises(ConfigError, match="docstrings"):
        list(builtin.python_docs_documents(fake_stdlib, docstrings="some"))


def test_real_stdlib_is_deterministic_and_clean():
    files = builtin.stdlib_files()
    rel = [p.relative_to(builtin.stdlib_root()).as_posix() for p in files]
    assert rel == sorted(rel) and rel == [p.relative_to(builtin.stdlib_root()).as_posix()
                                          for p in builtin.stdlib_files()]
    assert "os.py" in rel and "json/__init__.py" in rel
    assert not any(part in builtin.EXCLUDED_DIRS for r in rel for part in r.split("/")[:-1])


def test_build_corpus_builtin_max_docs(tmp_path):
    out = tmp_path / "docs.parquet"
    meta = build_corpus("py", {"source": "builtin", "name": "python-stdlib", "max_docs": 3},
                        out, tmp_path / "meta.json", cache_dir=tmp_path / "cache")
    expected = [p.read_text() for p in builtin.stdlib_files()[:3]]
    assert pq.read_table(out)["text"].to_pylist() == expected
    assert meta["python_version"] == sys.version.split()[0] and meta["documents"] == 3


def test_unknown_builtin_and_unknown_key(tmp_path):
    args = (tmp_path / "d.parquet", tmp_path / "m.json")
    with pytest.raises(ConfigError, match=r"corpora\.x\.name: unknown builtin corpus 'python'"):
        build_corpus("x", {"source": "builtin", "name": "python"}, *args, cache_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"corpora\.x: unknown key\(s\) docstrings"):
        build_corpus("x", {"source": "builtin", "name": "python-stdlib", "docstrings": "all"},
                     *args, cache_dir=tmp_path)
    assert not (tmp_path / "d.parquet").exists()
