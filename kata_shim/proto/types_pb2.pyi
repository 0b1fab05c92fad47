from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

Always: FSGroupChangePolicy
DESCRIPTOR: _descriptor.FileDescriptor
OnRootMismatch: FSGroupChangePolicy
v4: IPFamily
v6: IPFamily

class ARPNeighbor(_message.Message):
    __slots__ = ["device", "flags", "lladdr", "state", "toIPAddress"]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    LLADDR_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TOIPADDRESS_FIELD_NUMBER: _ClassVar[int]
    device: str
    flags: int
    lladdr: str
    state: int
    toIPAddress: IPAddress
    def __init__(self, toIPAddress: _Optional[_Union[IPAddress, _Mapping]] = ..., device: _Optional[str] = ..., lladdr: _Optional[str] = ..., state: _Optional[int] = ..., flags: _Optional[int] = ...) -> None: ...

class IPAddress(_message.Message):
    __slots__ = ["address", "family", "mask"]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    address: str
    family: IPFamily
    mask: str
    def __init__(self, family: _Optional[_Union[IPFamily, str]] = ..., address: _Optional[str] = ..., mask: _Optional[str] = ...) -> None: ...

class Interface(_message.Message):
    __slots__ = ["IPAddresses", "device", "devicePath", "hwAddr", "mtu", "name", "raw_flags", "type"]
    DEVICEPATH_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    HWADDR_FIELD_NUMBER: _ClassVar[int]
    IPADDRESSES_FIELD_NUMBER: _ClassVar[int]
    IPAddresses: _containers.RepeatedCompositeFieldContainer[IPAddress]
    MTU_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    RAW_FLAGS_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    device: str
    devicePath: str
    hwAddr: str
    mtu: int
    name: str
    raw_flags: int
    type: str
    def __init__(self, device: _Optional[str] = ..., name: _Optional[str] = ..., IPAddresses: _Optional[_Iterable[_Union[IPAddress, _Mapping]]] = ..., mtu: _Optional[int] = ..., hwAddr: _Optional[str] = ..., devicePath: _Optional[str] = ..., type: _Optional[str] = ..., raw_flags: _Optional[int] = ...) -> None: ...

class Route(_message.Message):
    __slots__ = ["dest", "device", "family", "flags", "gateway", "mtu", "scope", "source"]
    DEST_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    dest: str
    device: str
    family: IPFamily
    flags: int
    gateway: str
    mtu: int
    scope: int
    source: str
    def __init__(self, dest: _Optional[str] = ..., gateway: _Optional[str] = ..., device: _Optional[str] = ..., source: _Optional[str] = ..., scope: _Optional[int] = ..., family: _Optional[_Union[IPFamily, str]] = ..., flags: _Optional[int] = ..., mtu: _Optional[int] = ...) -> None: ...

class IPFamily(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []

class FSGroupChangePolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []
