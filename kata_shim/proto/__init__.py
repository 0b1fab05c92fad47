"""Protocol definitions: kata-shim's .proto files and the modules generated from them.

`*_pb2.py` / `*_pb2.pyi` are protoc's message classes; `*_ttrpc.py` (for files
with services) hold the ttrpc service descriptors, server base classes and typed
clients made by protoc-gen-kata-ttrpc. All generated files are checked in; do not
edit them — change the .proto and run `make proto` (docs/proto.md).
"""
