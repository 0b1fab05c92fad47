from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Options(_message.Message):
    __slots__ = ["config_body", "config_path", "type_url"]
    CONFIG_BODY_FIELD_NUMBER: _ClassVar[int]
    CONFIG_PATH_FIELD_NUMBER: _ClassVar[int]
    TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    config_body: bytes
    config_path: str
    type_url: str
    def __init__(self, type_url: _Optional[str] = ..., config_path: _Optional[str] = ..., config_body: _Optional[bytes] = ...) -> None: ...
