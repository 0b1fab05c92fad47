from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Box(_message.Message):
    __slots__ = ["Height", "Width"]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    Height: int
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    Width: int
    def __init__(self, Height: _Optional[int] = ..., Width: _Optional[int] = ...) -> None: ...

class Hook(_message.Message):
    __slots__ = ["Args", "Env", "Path", "Timeout"]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    Args: _containers.RepeatedScalarFieldContainer[str]
    ENV_FIELD_NUMBER: _ClassVar[int]
    Env: _containers.RepeatedScalarFieldContainer[str]
    PATH_FIELD_NUMBER: _ClassVar[int]
    Path: str
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    Timeout: int
    def __init__(self, Path: _Optional[str] = ..., Args: _Optional[_Iterable[str]] = ..., Env: _Optional[_Iterable[str]] = ..., Timeout: _Optional[int] = ...) -> None: ...

class Hooks(_message.Message):
    __slots__ = ["CreateContainer", "CreateRuntime", "Poststart", "Poststop", "Prestart", "StartContainer"]
    CREATECONTAINER_FIELD_NUMBER: _ClassVar[int]
    CREATERUNTIME_FIELD_NUMBER: _ClassVar[int]
    CreateContainer: _containers.RepeatedCompositeFieldContainer[Hook]
    CreateRuntime: _containers.RepeatedCompositeFieldContainer[Hook]
    POSTSTART_FIELD_NUMBER: _ClassVar[int]
    POSTSTOP_FIELD_NUMBER: _ClassVar[int]
    PRESTART_FIELD_NUMBER: _ClassVar[int]
    Poststart: _containers.RepeatedCompositeFieldContainer[Hook]
    Poststop: _containers.RepeatedCompositeFieldContainer[Hook]
    Prestart: _containers.RepeatedCompositeFieldContainer[Hook]
    STARTCONTAINER_FIELD_NUMBER: _ClassVar[int]
    StartContainer: _containers.RepeatedCompositeFieldContainer[Hook]
    def __init__(self, Prestart: _Optional[_Iterable[_Union[Hook, _Mapping]]] = ..., Poststart: _Optional[_Iterable[_Union[Hook, _Mapping]]] = ..., Poststop: _Optional[_Iterable[_Union[Hook, _Mapping]]] = ..., CreateRuntime: _Optional[_Iterable[_Union[Hook, _Mapping]]] = ..., CreateContainer: _Optional[_Iterable[_Union[Hook, _Mapping]]] = ..., StartContainer: _Optional[_Iterable[_Union[Hook, _Mapping]]] = ...) -> None: ...

class Linux(_message.Message):
    __slots__ = ["CgroupsPath", "Devices", "GIDMappings", "IntelRdt", "MaskedPaths", "MountLabel", "Namespaces", "ReadonlyPaths", "Resources", "RootfsPropagation", "Seccomp", "Sysctl", "UIDMappings"]
    class SysctlEntry(_message.Message):
        __slots__ = ["key", "value"]
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CGROUPSPATH_FIELD_NUMBER: _ClassVar[int]
    CgroupsPath: str
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    Devices: _containers.RepeatedCompositeFieldContainer[LinuxDevice]
    GIDMAPPINGS_FIELD_NUMBER: _ClassVar[int]
    GIDMappings: _containers.RepeatedCompositeFieldContainer[LinuxIDMapping]
    INTELRDT_FIELD_NUMBER: _ClassVar[int]
    IntelRdt: LinuxIntelRdt
    MASKEDPATHS_FIELD_NUMBER: _ClassVar[int]
    MOUNTLABEL_FIELD_NUMBER: _ClassVar[int]
    MaskedPaths: _containers.RepeatedScalarFieldContainer[str]
    MountLabel: str
    NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    Namespaces: _containers.RepeatedCompositeFieldContainer[LinuxNamespace]
    READONLYPATHS_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    ROOTFSPROPAGATION_FIELD_NUMBER: _ClassVar[int]
    ReadonlyPaths: _containers.RepeatedScalarFieldContainer[str]
    Resources: LinuxResources
    RootfsPropagation: str
    SECCOMP_FIELD_NUMBER: _ClassVar[int]
    SYSCTL_FIELD_NUMBER: _ClassVar[int]
    Seccomp: LinuxSeccomp
    Sysctl: _containers.ScalarMap[str, str]
    UIDMAPPINGS_FIELD_NUMBER: _ClassVar[int]
    UIDMappings: _containers.RepeatedCompositeFieldContainer[LinuxIDMapping]
    def __init__(self, UIDMappings: _Optional[_Iterable[_Union[LinuxIDMapping, _Mapping]]] = ..., GIDMappings: _Optional[_Iterable[_Union[LinuxIDMapping, _Mapping]]] = ..., Sysctl: _Optional[_Mapping[str, str]] = ..., Resources: _Optional[_Union[LinuxResources, _Mapping]] = ..., CgroupsPath: _Optional[str] = ..., Namespaces: _Optional[_Iterable[_Union[LinuxNamespace, _Mapping]]] = ..., Devices: _Optional[_Iterable[_Union[LinuxDevice, _Mapping]]] = ..., Seccomp: _Optional[_Union[LinuxSeccomp, _Mapping]] = ..., RootfsPropagation: _Optional[str] = ..., MaskedPaths: _Optional[_Iterable[str]] = ..., ReadonlyPaths: _Optional[_Iterable[str]] = ..., MountLabel: _Optional[str] = ..., IntelRdt: _Optional[_Union[LinuxIntelRdt, _Mapping]] = ...) -> None: ...

class LinuxBlockIO(_message.Message):
    __slots__ = ["LeafWeight", "ThrottleReadBpsDevice", "ThrottleReadIOPSDevice", "ThrottleWriteBpsDevice", "ThrottleWriteIOPSDevice", "Weight", "WeightDevice"]
    LEAFWEIGHT_FIELD_NUMBER: _ClassVar[int]
    LeafWeight: int
    THROTTLEREADBPSDEVICE_FIELD_NUMBER: _ClassVar[int]
    THROTTLEREADIOPSDEVICE_FIELD_NUMBER: _ClassVar[int]
    THROTTLEWRITEBPSDEVICE_FIELD_NUMBER: _ClassVar[int]
    THROTTLEWRITEIOPSDEVICE_FIELD_NUMBER: _ClassVar[int]
    ThrottleReadBpsDevice: _containers.RepeatedCompositeFieldContainer[LinuxThrottleDevice]
    ThrottleReadIOPSDevice: _containers.RepeatedCompositeFieldContainer[LinuxThrottleDevice]
    ThrottleWriteBpsDevice: _containers.RepeatedCompositeFieldContainer[LinuxThrottleDevice]
    ThrottleWriteIOPSDevice: _containers.RepeatedCompositeFieldContainer[LinuxThrottleDevice]
    WEIGHTDEVICE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    Weight: int
    WeightDevice: _containers.RepeatedCompositeFieldContainer[LinuxWeightDevice]
    def __init__(self, Weight: _Optional[int] = ..., LeafWeight: _Optional[int] = ..., WeightDevice: _Optional[_Iterable[_Union[LinuxWeightDevice, _Mapping]]] = ..., ThrottleReadBpsDevice: _Optional[_Iterable[_Union[LinuxThrottleDevice, _Mapping]]] = ..., ThrottleWriteBpsDevice: _Optional[_Iterable[_Union[LinuxThrottleDevice, _Mapping]]] = ..., ThrottleReadIOPSDevice: _Optional[_Iterable[_Union[LinuxThrottleDevice, _Mapping]]] = ..., ThrottleWriteIOPSDevice: _Optional[_Iterable[_Union[LinuxThrottleDevice, _Mapping]]] = ...) -> None: ...

class LinuxCPU(_message.Message):
    __slots__ = ["Cpus", "Mems", "Period", "Quota", "RealtimePeriod", "RealtimeRuntime", "Shares"]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    Cpus: str
    MEMS_FIELD_NUMBER: _ClassVar[int]
    Mems: str
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    Period: int
    QUOTA_FIELD_NUMBER: _ClassVar[int]
    Quota: int
    REALTIMEPERIOD_FIELD_NUMBER: _ClassVar[int]
    REALTIMERUNTIME_FIELD_NUMBER: _ClassVar[int]
    RealtimePeriod: int
    RealtimeRuntime: int
    SHARES_FIELD_NUMBER: _ClassVar[int]
    Shares: int
    def __init__(self, Shares: _Optional[int] = ..., Quota: _Optional[int] = ..., Period: _Optional[int] = ..., RealtimeRuntime: _Optional[int] = ..., RealtimePeriod: _Optional[int] = ..., Cpus: _Optional[str] = ..., Mems: _Optional[str] = ...) -> None: ...

class LinuxCapabilities(_message.Message):
    __slots__ = ["Ambient", "Bounding", "Effective", "Inheritable", "Permitted"]
    AMBIENT_FIELD_NUMBER: _ClassVar[int]
    Ambient: _containers.RepeatedScalarFieldContainer[str]
    BOUNDING_FIELD_NUMBER: _ClassVar[int]
    Bounding: _containers.RepeatedScalarFieldContainer[str]
    EFFECTIVE_FIELD_NUMBER: _ClassVar[int]
    Effective: _containers.RepeatedScalarFieldContainer[str]
    INHERITABLE_FIELD_NUMBER: _ClassVar[int]
    Inheritable: _containers.RepeatedScalarFieldContainer[str]
    PERMITTED_FIELD_NUMBER: _ClassVar[int]
    Permitted: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, Bounding: _Optional[_Iterable[str]] = ..., Effective: _Optional[_Iterable[str]] = ..., Inheritable: _Optional[_Iterable[str]] = ..., Permitted: _Optional[_Iterable[str]] = ..., Ambient: _Optional[_Iterable[str]] = ...) -> None: ...

class LinuxDevice(_message.Message):
    __slots__ = ["FileMode", "GID", "Major", "Minor", "Path", "Type", "UID"]
    FILEMODE_FIELD_NUMBER: _ClassVar[int]
    FileMode: int
    GID: int
    GID_FIELD_NUMBER: _ClassVar[int]
    MAJOR_FIELD_NUMBER: _ClassVar[int]
    MINOR_FIELD_NUMBER: _ClassVar[int]
    Major: int
    Minor: int
    PATH_FIELD_NUMBER: _ClassVar[int]
    Path: str
    TYPE_FIELD_NUMBER: _ClassVar[int]
    Type: str
    UID: int
    UID_FIELD_NUMBER: _ClassVar[int]
    def __init__(self, Path: _Optional[str] = ..., Type: _Optional[str] = ..., Major: _Optional[int] = ..., Minor: _Optional[int] = ..., FileMode: _Optional[int] = ..., UID: _Optional[int] = ..., GID: _Optional[int] = ...) -> None: ...

class LinuxDeviceCgroup(_message.Message):
    __slots__ = ["Access", "Allow", "Major", "Minor", "Type"]
    ACCESS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_FIELD_NUMBER: _ClassVar[int]
    Access: str
    Allow: bool
    MAJOR_FIELD_NUMBER: _ClassVar[int]
    MINOR_FIELD_NUMBER: _ClassVar[int]
    Major: int
    Minor: int
    TYPE_FIELD_NUMBER: _ClassVar[int]
    Type: str
    def __init__(self, Allow: bool = ..., Type: _Optional[str] = ..., Major: _Optional[int] = ..., Minor: _Optional[int] = ..., Access: _Optional[str] = ...) -> None: ...

class LinuxHugepageLimit(_message.Message):
    __slots__ = ["Limit", "Pagesize"]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    Limit: int
    PAGESIZE_FIELD_NUMBER: _ClassVar[int]
    Pagesize: str
    def __init__(self, Pagesize: _Optional[str] = ..., Limit: _Optional[int] = ...) -> None: ...

class LinuxIDMapping(_message.Message):
    __slots__ = ["ContainerID", "HostID", "Size"]
    CONTAINERID_FIELD_NUMBER: _ClassVar[int]
    ContainerID: int
    HOSTID_FIELD_NUMBER: _ClassVar[int]
    HostID: int
    SIZE_FIELD_NUMBER: _ClassVar[int]
    Size: int
    def __init__(self, HostID: _Optional[int] = ..., ContainerID: _Optional[int] = ..., Size: _Optional[int] = ...) -> None: ...

class LinuxIntelRdt(_message.Message):
    __slots__ = ["L3CacheSchema"]
    L3CACHESCHEMA_FIELD_NUMBER: _ClassVar[int]
    L3CacheSchema: str
    def __init__(self, L3CacheSchema: _Optional[str] = ...) -> None: ...

class LinuxInterfacePriority(_message.Message):
    __slots__ = ["Name", "Priority"]
    NAME_FIELD_NUMBER: _ClassVar[int]
    Name: str
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    Priority: int
    def __init__(self, Name: _Optional[str] = ..., Priority: _Optional[int] = ...) -> None: ...

class LinuxMemory(_message.Message):
    __slots__ = ["DisableOOMKiller", "Kernel", "KernelTCP", "Limit", "Reservation", "Swap", "Swappiness"]
    DISABLEOOMKILLER_FIELD_NUMBER: _ClassVar[int]
    DisableOOMKiller: bool
    KERNELTCP_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    Kernel: int
    KernelTCP: int
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    Limit: int
    RESERVATION_FIELD_NUMBER: _ClassVar[int]
    Reservation: int
    SWAPPINESS_FIELD_NUMBER: _ClassVar[int]
    SWAP_FIELD_NUMBER: _ClassVar[int]
    Swap: int
    Swappiness: int
    def __init__(self, Limit: _Optional[int] = ..., Reservation: _Optional[int] = ..., Swap: _Optional[int] = ..., Kernel: _Optional[int] = ..., KernelTCP: _Optional[int] = ..., Swappiness: _Optional[int] = ..., DisableOOMKiller: bool = ...) -> None: ...

class LinuxNamespace(_message.Message):
    __slots__ = ["Path", "Type"]
    PATH_FIELD_NUMBER: _ClassVar[int]
    Path: str
    TYPE_FIELD_NUMBER: _ClassVar[int]
    Type: str
    def __init__(self, Type: _Optional[str] = ..., Path: _Optional[str] = ...) -> None: ...

class LinuxNetwork(_message.Message):
    __slots__ = ["ClassID", "Priorities"]
    CLASSID_FIELD_NUMBER: _ClassVar[int]
    ClassID: int
    PRIORITIES_FIELD_NUMBER: _ClassVar[int]
    Priorities: _containers.RepeatedCompositeFieldContainer[LinuxInterfacePriority]
    def __init__(self, ClassID: _Optional[int] = ..., Priorities: _Optional[_Iterable[_Union[LinuxInterfacePriority, _Mapping]]] = ...) -> None: ...

class LinuxPids(_message.Message):
    __slots__ = ["Limit"]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    Limit: int
    def __init__(self, Limit: _Optional[int] = ...) -> None: ...

class LinuxResources(_message.Message):
    __slots__ = ["BlockIO", "CPU", "Devices", "HugepageLimits", "Memory", "Network", "Pids"]
    BLOCKIO_FIELD_NUMBER: _ClassVar[int]
    BlockIO: LinuxBlockIO
    CPU: LinuxCPU
    CPU_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    Devices: _containers.RepeatedCompositeFieldContainer[LinuxDeviceCgroup]
    HUGEPAGELIMITS_FIELD_NUMBER: _ClassVar[int]
    HugepageLimits: _containers.RepeatedCompositeFieldContainer[LinuxHugepageLimit]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    Memory: LinuxMemory
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    Network: LinuxNetwork
    PIDS_FIELD_NUMBER: _ClassVar[int]
    Pids: LinuxPids
    def __init__(self, Devices: _Optional[_Iterable[_Union[LinuxDeviceCgroup, _Mapping]]] = ..., Memory: _Optional[_Union[LinuxMemory, _Mapping]] = ..., CPU: _Optional[_Union[LinuxCPU, _Mapping]] = ..., Pids: _Optional[_Union[LinuxPids, _Mapping]] = ..., BlockIO: _Optional[_Union[LinuxBlockIO, _Mapping]] = ..., HugepageLimits: _Optional[_Iterable[_Union[LinuxHugepageLimit, _Mapping]]] = ..., Network: _Optional[_Union[LinuxNetwork, _Mapping]] = ...) -> None: ...

class LinuxSeccomp(_message.Message):
    __slots__ = ["Architectures", "DefaultAction", "Flags", "Syscalls"]
    ARCHITECTURES_FIELD_NUMBER: _ClassVar[int]
    Architectures: _containers.RepeatedScalarFieldContainer[str]
    DEFAULTACTION_FIELD_NUMBER: _ClassVar[int]
    DefaultAction: str
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    Flags: _containers.RepeatedScalarFieldContainer[str]
    SYSCALLS_FIELD_NUMBER: _ClassVar[int]
    Syscalls: _containers.RepeatedCompositeFieldContainer[LinuxSyscall]
    def __init__(self, DefaultAction: _Optional[str] = ..., Architectures: _Optional[_Iterable[str]] = ..., Flags: _Optional[_Iterable[str]] = ..., Syscalls: _Optional[_Iterable[_Union[LinuxSyscall, _Mapping]]] = ...) -> None: ...

class LinuxSeccompArg(_message.Message):
    __slots__ = ["Index", "Op", "Value", "ValueTwo"]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    Index: int
    OP_FIELD_NUMBER: _ClassVar[int]
    Op: str
    VALUETWO_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    Value: int
    ValueTwo: int
    def __init__(self, Index: _Optional[int] = ..., Value: _Optional[int] = ..., ValueTwo: _Optional[int] = ..., Op: _Optional[str] = ...) -> None: ...

class LinuxSyscall(_message.Message):
    __slots__ = ["Action", "Args", "Names", "errnoret"]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    Action: str
    Args: _containers.RepeatedCompositeFieldContainer[LinuxSeccompArg]
    ERRNORET_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    Names: _containers.RepeatedScalarFieldContainer[str]
    errnoret: int
    def __init__(self, Names: _Optional[_Iterable[str]] = ..., Action: _Optional[str] = ..., errnoret: _Optional[int] = ..., Args: _Optional[_Iterable[_Union[LinuxSeccompArg, _Mapping]]] = ...) -> None: ...

class LinuxThrottleDevice(_message.Message):
    __slots__ = ["Major", "Minor", "Rate"]
    MAJOR_FIELD_NUMBER: _ClassVar[int]
    MINOR_FIELD_NUMBER: _ClassVar[int]
    Major: int
    Minor: int
    RATE_FIELD_NUMBER: _ClassVar[int]
    Rate: int
    def __init__(self, Major: _Optional[int] = ..., Minor: _Optional[int] = ..., Rate: _Optional[int] = ...) -> None: ...

class LinuxWeightDevice(_message.Message):
    __slots__ = ["LeafWeight", "Major", "Minor", "Weight"]
    LEAFWEIGHT_FIELD_NUMBER: _ClassVar[int]
    LeafWeight: int
    MAJOR_FIELD_NUMBER: _ClassVar[int]
    MINOR_FIELD_NUMBER: _ClassVar[int]
    Major: int
    Minor: int
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    Weight: int
    def __init__(self, Major: _Optional[int] = ..., Minor: _Optional[int] = ..., Weight: _Optional[int] = ..., LeafWeight: _Optional[int] = ...) -> None: ...

class Mount(_message.Message):
    __slots__ = ["destination", "options", "source", "type"]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    destination: str
    options: _containers.RepeatedScalarFieldContainer[str]
    source: str
    type: str
    def __init__(self, destination: _Optional[str] = ..., source: _Optional[str] = ..., type: _Optional[str] = ..., options: _Optional[_Iterable[str]] = ...) -> None: ...

class POSIXRlimit(_message.Message):
    __slots__ = ["Hard", "Soft", "Type"]
    HARD_FIELD_NUMBER: _ClassVar[int]
    Hard: int
    SOFT_FIELD_NUMBER: _ClassVar[int]
    Soft: int
    TYPE_FIELD_NUMBER: _ClassVar[int]
    Type: str
    def __init__(self, Type: _Optional[str] = ..., Hard: _Optional[int] = ..., Soft: _Optional[int] = ...) -> None: ...

class Process(_message.Message):
    __slots__ = ["ApparmorProfile", "Args", "Capabilities", "ConsoleSize", "Cwd", "Env", "NoNewPrivileges", "OOMScoreAdj", "Rlimits", "SelinuxLabel", "Terminal", "User"]
    APPARMORPROFILE_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    ApparmorProfile: str
    Args: _containers.RepeatedScalarFieldContainer[str]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    CONSOLESIZE_FIELD_NUMBER: _ClassVar[int]
    CWD_FIELD_NUMBER: _ClassVar[int]
    Capabilities: LinuxCapabilities
    ConsoleSize: Box
    Cwd: str
    ENV_FIELD_NUMBER: _ClassVar[int]
    Env: _containers.RepeatedScalarFieldContainer[str]
    NONEWPRIVILEGES_FIELD_NUMBER: _ClassVar[int]
    NoNewPrivileges: bool
    OOMSCOREADJ_FIELD_NUMBER: _ClassVar[int]
    OOMScoreAdj: int
    RLIMITS_FIELD_NUMBER: _ClassVar[int]
    Rlimits: _containers.RepeatedCompositeFieldContainer[POSIXRlimit]
    SELINUXLABEL_FIELD_NUMBER: _ClassVar[int]
    SelinuxLabel: str
    TERMINAL_FIELD_NUMBER: _ClassVar[int]
    Terminal: bool
    USER_FIELD_NUMBER: _ClassVar[int]
    User: User
    def __init__(self, Terminal: bool = ..., ConsoleSize: _Optional[_Union[Box, _Mapping]] = ..., User: _Optional[_Union[User, _Mapping]] = ..., Args: _Optional[_Iterable[str]] = ..., Env: _Optional[_Iterable[str]] = ..., Cwd: _Optional[str] = ..., Capabilities: _Optional[_Union[LinuxCapabilities, _Mapping]] = ..., Rlimits: _Optional[_Iterable[_Union[POSIXRlimit, _Mapping]]] = ..., NoNewPrivileges: bool = ..., ApparmorProfile: _Optional[str] = ..., OOMScoreAdj: _Optional[int] = ..., SelinuxLabel: _Optional[str] = ...) -> None: ...

class Root(_message.Message):
    __slots__ = ["Path", "Readonly"]
    PATH_FIELD_NUMBER: _ClassVar[int]
    Path: str
    READONLY_FIELD_NUMBER: _ClassVar[int]
    Readonly: bool
    def __init__(self, Path: _Optional[str] = ..., Readonly: bool = ...) -> None: ...

class Solaris(_message.Message):
    __slots__ = ["dummy"]
    DUMMY_FIELD_NUMBER: _ClassVar[int]
    dummy: str
    def __init__(self, dummy: _Optional[str] = ...) -> None: ...

class Spec(_message.Message):
    __slots__ = ["Annotations", "Hooks", "Hostname", "Linux", "Mounts", "Process", "Root", "Solaris", "Version", "Windows"]
    class AnnotationsEntry(_message.Message):
        __slots__ = ["key", "value"]
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ANNOTATIONS_FIELD_NUMBER: _ClassVar[int]
    Annotations: _containers.ScalarMap[str, str]
    HOOKS_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    Hooks: Hooks
    Hostname: str
    LINUX_FIELD_NUMBER: _ClassVar[int]
    Linux: Linux
    MOUNTS_FIELD_NUMBER: _ClassVar[int]
    Mounts: _containers.RepeatedCompositeFieldContainer[Mount]
    PROCESS_FIELD_NUMBER: _ClassVar[int]
    Process: Process
    ROOT_FIELD_NUMBER: _ClassVar[int]
    Root: Root
    SOLARIS_FIELD_NUMBER: _ClassVar[int]
    Solaris: Solaris
    VERSION_FIELD_NUMBER: _ClassVar[int]
    Version: str
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    Windows: Windows
    def __init__(self, Version: _Optional[str] = ..., Process: _Optional[_Union[Process, _Mapping]] = ..., Root: _Optional[_Union[Root, _Mapping]] = ..., Hostname: _Optional[str] = ..., Mounts: _Optional[_Iterable[_Union[Mount, _Mapping]]] = ..., Hooks: _Optional[_Union[Hooks, _Mapping]] = ..., Annotations: _Optional[_Mapping[str, str]] = ..., Linux: _Optional[_Union[Linux, _Mapping]] = ..., Solaris: _Optional[_Union[Solaris, _Mapping]] = ..., Windows: _Optional[_Union[Windows, _Mapping]] = ...) -> None: ...

class User(_message.Message):
    __slots__ = ["AdditionalGids", "GID", "UID", "Username"]
    ADDITIONALGIDS_FIELD_NUMBER: _ClassVar[int]
    AdditionalGids: _containers.RepeatedScalarFieldContainer[int]
    GID: int
    GID_FIELD_NUMBER: _ClassVar[int]
    UID: int
    UID_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    Username: str
    def __init__(self, UID: _Optional[int] = ..., GID: _Optional[int] = ..., AdditionalGids: _Optional[_Iterable[int]] = ..., Username: _Optional[str] = ...) -> None: ...

class Windows(_message.Message):
    __slots__ = ["dummy"]
    DUMMY_FIELD_NUMBER: _ClassVar[int]
    dummy: str
    def __init__(self, dummy: _Optional[str] = ...) -> None: ...
