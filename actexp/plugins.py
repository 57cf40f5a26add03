"""Plugins: activations and initializers in Python, enabled by the person who runs a command, never
by a config.

Two sources:
- an installed package's entry points, in the groups `actexp.activations` (name -> an
  actexp.components.Activation) and `actexp.initializers` (name -> an initializer function,
  called as the built-ins are: (tensor, fan_in, fan_out, act_gain, **params));
- loose files, named by `--plugin FILE.py` or by ACTEXP_PLUGINS (paths separated by os.pathsep):
  a file defines `ACTIVATIONS = {name: Activation(...)}` and/or `INITIALIZERS = {name: function}`.

A config names a plugin's component as it names a built-in. A name that no enabled plugin provides
is an unknown name: nothing is imported because a config said so. A plugin is imported and checked
(`check_activation`, `check_initializer`) the first time it is looked up: an entry point when a
config names it, a file when any plugin is first looked up. The enabled files are the environment's
ACTEXP_PLUGINS, so that a sweep's worker processes (which inherit the environment) and Ray's workers
(which get it in the job's runtime environment) find the plugins the command line enabled; what is
loaded is cached per process, by that value.

A run folder records the plugins its config uses (`record`): `show`, `eval` and `--resume` say
which one is missing, and where it came from, instead of failing on an unknown name.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .components import ACTIVATIONS, ALIASES, INITIALIZERS, Activation, LazyModule
from .errors import PluginError

torch = LazyModule("torch")
nn = LazyModule("torch.nn")

ENV = "ACTEXP_PLUGINS"
GROUPS = {"activation": "actexp.activations", "initializer": "actexp.initializers"}
FILE_TABLES = {"activation": "ACTIVATIONS", "initializer": "INITIALIZERS"}
BUILT_IN = {"activation": ACTIVATIONS, "initializer": INITIALIZERS}
RESERVED = {"activation": ("formula",)}  # names the config gives a meaning of its own
MAX_PLUGIN_BYTES = 1_000_000  # a plugin file is a few KB
PROBE_SHAPE = (64, 16)  # the probe batch a plugin activation is checked on
ENABLE_HINT = "--plugin FILE.py, ACTEXP_PLUGINS, or an installed package's entry points"


@dataclass(frozen=True)
class Plugin:
    """One component a plugin provides, and where it comes from."""

    kind: str  # "activation" or "initializer"
    name: str
    entry: object  # an Activation, or an initializer function
    origin: str  # "file" or "entry point"
    module: str  # the module that defines it
    path: str | None = None  # a loose file's absolute path
    sha256: str | None = None  # a loose file's content hash
    distribution: str | None = None  # an entry point's installed package
    version: str | None = None

    def record(self) -> dict:
        """What a run folder keeps of it (summary.json's `plugins`)."""
        fields = {"kind": self.kind, "name": self.name, "origin": self.origin, "module": self.module}
        if self.origin == "file":
            return fields | {"path": self.path, "sha256": self.sha256}
        return fields | {"distribution": self.distribution, "version": self.version}

    def describe(self) -> str:
        return describe_record(self.record())


def describe_record(record: dict) -> str:
    """Where a plugin comes from, in words: `file /x/snake.py (sha256 1a2b3c4d…)` or `entry point
    of snakes 1.0 (module snakes.act)`."""
    if record.get("origin") == "file":
        return f"file {record.get('path')} (sha256 {str(record.get('sha256'))[:12]}…)"
    return f"entry point of {record.get('distribution')} {record.get('version')} (module {record.get('module')})"


# ----------------------------------------------------------------------------- enabling


def enable(paths) -> list[Plugin]:
    """Enable plugin files (the CLI's --plugin) for this process and the processes it starts: their
    absolute paths join ACTEXP_PLUGINS, and they are loaded and checked now (PluginError names the
    one that fails). Returns every plugin the enabled files provide."""
    files = list(enabled_files())
    for path in paths:
        resolved = str(Path(path).expanduser().resolve())
        _check_file(Path(path), resolved)
        if resolved not in files:
            files.append(resolved)
    os.environ[ENV] = os.pathsep.join(files)
    return list(_file_plugins(tuple(files)).values())


def enabled_files() -> tuple[str, ...]:
    return tuple(p for p in os.environ.get(ENV, "").split(os.pathsep) if p)


def forget() -> None:
    """Drop what this process has loaded (tests that change ACTEXP_PLUGINS or the installed entry points)."""
    _file_plugins.cache_clear()
    _entry_points.cache_clear()
    _entry_point_plugin.cache_clear()


# ----------------------------------------------------------------------------- looking up


def find(kind: str, name: str) -> Plugin | None:
    """The enabled plugin that provides `kind` `name` (loaded and checked), or None. A name no
    enabled file and no installed entry point has imports nothing."""
    if kind not in GROUPS or not isinstance(name, str):
        return None
    files = enabled_files()
    if files:
        found = _file_plugins(files).get((kind, name))
        if found is not None:
            return found
    if name in _entry_points(kind):
        return _entry_point_plugin(kind, name)
    return None


def available(kind: str) -> dict[str, str]:
    """The names of `kind` that enabled plugins provide, with where each comes from (entry points
    are listed from the packages' metadata, not imported)."""
    names = {}
    files = enabled_files()
    if files:
        names |= {name: plugin.describe() for (k, name), plugin in _file_plugins(files).items() if k == kind}
    for name, point in _entry_points(kind).items():
        names.setdefault(name, f"entry point {point.value}")
    return names


def unknown_hint(kind: str) -> str:
    """The end of an unknown-name error: which plugins are enabled, or how to enable one."""
    if kind not in GROUPS:
        return ""
    names = available(kind)
    if not names:
        return f"; plugins: none enabled ({ENABLE_HINT}, group {GROUPS[kind]})"
    return f"; plugins: {', '.join(names)}"


def used_by(config) -> list[Plugin]:
    """The plugins a validated config's components come from."""
    used = [find("activation", config.model.activation.name)]
    used += [find("initializer", c.name) for c in (config.model.init, config.model.bias_init)]
    unique = {(p.kind, p.name): p for p in used if p is not None}
    return list(unique.values())


def record(config) -> list[dict]:
    return [plugin.record() for plugin in used_by(config)]


def missing(recorded) -> list[str]:
    """For each plugin a run folder recorded (summary.json's `plugins`) that is not enabled here, or
    that is enabled from a file whose content differs, a sentence saying so and what to do."""
    sentences = []
    for entry in recorded if isinstance(recorded, list) else []:
        if not isinstance(entry, dict) or entry.get("kind") not in GROUPS or not isinstance(entry.get("name"), str):
            continue
        kind, name = entry["kind"], entry["name"]
        found = find(kind, name)
        where = describe_record(entry)
        if found is None:
            fix = f"--plugin {entry.get('path')} (or add it to {ENV})" if entry.get("origin") == "file" else f"install {entry.get('distribution')} {entry.get('version')}"
            sentences.append(f"its {kind} {name!r} comes from the plugin {where}, which is not enabled here; enable it: {fix}")
        elif entry.get("origin") == "file" and found.sha256 != entry.get("sha256"):
            sentences.append(f"its {kind} {name!r} came from {where}; the enabled {found.describe()} differs")
    return sentences


def require_recorded(folder) -> None:
    """PluginError when a run folder needs a plugin that is not enabled (`eval`, `--resume`)."""
    from .runs import read_summary

    absent = [s for s in missing(read_summary(Path(folder)).get("plugins")) if "not enabled" in s]
    if absent:
        raise PluginError(f"{folder}: {absent[0]}")


# ----------------------------------------------------------------------------- loading


@functools.lru_cache(maxsize=8)
def _file_plugins(files: tuple[str, ...]) -> dict[tuple[str, str], Plugin]:
    plugins: dict[tuple[str, str], Plugin] = {}
    for path in files:
        for plugin in _load_file(path):
            key = (plugin.kind, plugin.name)
            if key in plugins:
                raise PluginError(f"plugin {path}: {plugin.kind} {plugin.name!r} is also defined by {plugins[key].describe()}; rename one")
            plugins[key] = plugin
    return plugins


def _check_file(path: Path, shown: str) -> None:
    if path.suffix != ".py":
        raise PluginError(f"plugin {shown}: expected a Python file (FILE.py)")
    if not path.is_file():
        raise PluginError(f"plugin {shown}: no such file")
    if path.stat().st_size > MAX_PLUGIN_BYTES:
        raise PluginError(f"plugin {shown}: larger than {MAX_PLUGIN_BYTES // 1_000_000} MB; a plugin is a few KB")


def _load_file(path: str) -> list[Plugin]:
    """Import a loose plugin file (as a module of its own, named after its hash) and check what it defines."""
    file = Path(path)
    _check_file(file, path)
    content = file.read_bytes()
    digest = hashlib.sha256(content).hexdigest()
    module_name = f"actexp_plugin_{''.join(c if c.isalnum() else '_' for c in file.stem)}_{digest[:12]}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # (dataclasses and pickling look a class's module up there)
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            del sys.modules[module_name]
            raise PluginError(f"plugin {path}: importing it raised {type(e).__name__}: {_first_line(e)}") from e
    tables = {kind: getattr(module, table, None) for kind, table in FILE_TABLES.items()}
    if all(table is None for table in tables.values()):
        raise PluginError(f"plugin {path}: defines neither ACTIVATIONS nor INITIALIZERS (a dict from name to actexp.components.Activation, or to an initializer function)")
    plugins = []
    for kind, table in tables.items():
        if table is None:
            continue
        if not isinstance(table, dict):
            raise PluginError(f"plugin {path}: {FILE_TABLES[kind]} is a {type(table).__name__}; expected a dict from name to {_entry_kind(kind)}")
        for name, entry in table.items():
            plugin = Plugin(kind, name, entry, "file", module_name, path=path, sha256=digest)
            _check(plugin)
            plugins.append(plugin)
    return plugins


@functools.lru_cache(maxsize=4)
def _entry_points(kind: str) -> dict:
    from importlib.metadata import entry_points

    return {point.name: point for point in entry_points(group=GROUPS[kind])}


@functools.lru_cache(maxsize=None)
def _entry_point_plugin(kind: str, name: str) -> Plugin:
    point = _entry_points(kind)[name]
    where = f"plugin {point.value} (entry point {name!r}, group {GROUPS[kind]})"
    try:
        entry = point.load()
    except Exception as e:
        raise PluginError(f"{where}: importing it raised {type(e).__name__}: {_first_line(e)}") from e
    distribution = getattr(point, "dist", None)
    plugin = Plugin(kind, name, entry, "entry point", point.module,
                    distribution=distribution.name if distribution else None, version=distribution.version if distribution else None)
    _check(plugin)
    return plugin


# ----------------------------------------------------------------------------- checking


def _check(plugin: Plugin) -> None:
    where = f"plugin {plugin.path or plugin.module}: {plugin.kind} {plugin.name!r}"
    name = plugin.name
    if not isinstance(name, str) or not name.isidentifier():
        raise PluginError(f"{where}: a name is an identifier (letters, digits and _)")
    if name in BUILT_IN[plugin.kind] or name in ALIASES or name in RESERVED.get(plugin.kind, ()):
        raise PluginError(f"{where}: {name!r} is a built-in name; give the plugin's {plugin.kind} another")
    if plugin.kind == "activation":
        check_activation(plugin.entry, where)
    else:
        check_initializer(plugin.entry, where)


def factory_defaults(factory, where: str) -> dict:
    """A factory's parameters, which must all have defaults of a config's types (they are the
    config's parameters)."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError) as e:
        raise PluginError(f"{where}: its factory has no signature to read ({e})") from e
    defaults = {}
    for p in parameters:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is inspect.Parameter.empty:
            raise PluginError(f"{where}: its factory's parameter {p.name!r} has no default; each is a config parameter with a default")
        if not isinstance(p.default, (bool, int, float, str)):
            raise PluginError(f"{where}: its factory's parameter {p.name!r} defaults to a {type(p.default).__name__}; a config parameter is a number, a boolean or a string")
        defaults[p.name] = p.default
    return defaults


def check_activation(spec, where: str) -> None:
    """An activation plugin, on a probe batch: it builds an nn.Module with exactly the declared
    learnable parameters, keeps its input's shape, is finite and differentiable; declared
    elementwise, each output depends on its own input alone (and a stack of members with their own
    parameters computes what each member does alone); its gain is a positive number."""
    if not isinstance(spec, Activation):
        raise PluginError(f"{where}: is a {type(spec).__name__}; declare it as actexp.components.Activation(factory, elementwise=..., learnable=..., gain=...)")
    defaults = factory_defaults(spec.factory, where)
    try:
        module = spec.factory(**defaults)
    except Exception as e:
        raise PluginError(f"{where}: its factory raised {type(e).__name__}: {_first_line(e)}") from e
    if not isinstance(module, nn.Module):
        raise PluginError(f"{where}: its factory returned a {type(module).__name__}; it must return a torch.nn.Module")
    names = tuple(name for name, _ in module.named_parameters())
    if set(names) != set(spec.learnable):
        raise PluginError(f"{where}: declares learnable {list(spec.learnable)} but its module's parameters are {list(names)}")
    z = torch.randn(*PROBE_SHAPE, generator=torch.Generator().manual_seed(0)) * 3
    z.requires_grad_(True)
    out = _probe(module, z, where)
    try:
        (grad,) = torch.autograd.grad(out.sum(), z)
    except RuntimeError as e:
        raise PluginError(f"{where}: is not differentiable on a probe batch ({_first_line(e)})") from e
    if not torch.isfinite(grad).all():
        raise PluginError(f"{where}: its gradient on a probe batch of N(0, 9) inputs is not finite")
    if spec.elementwise:
        _check_elementwise(module, z.detach(), out.detach(), where)
    gain = activation_gain_of(spec, defaults, module, where)
    if not (isinstance(gain, (int, float)) and 0 < gain < float("inf")):
        raise PluginError(f"{where}: its gain is {gain!r}; a gain is a positive number")


def _probe(module, z, where: str):
    try:
        out = module(z)
    except Exception as e:
        raise PluginError(f"{where}: raised {type(e).__name__} on a probe batch of {z.shape[0]} x {z.shape[1]}: {_first_line(e)}") from e
    if not torch.is_tensor(out) or out.shape != z.shape:
        shape = " x ".join(map(str, out.shape)) if torch.is_tensor(out) else type(out).__name__
        raise PluginError(f"{where}: turned a probe batch of {z.shape[0]} x {z.shape[1]} into {shape}; an activation keeps its input's shape")
    if not out.dtype.is_floating_point or not torch.isfinite(out).all():
        raise PluginError(f"{where}: its output on a probe batch of N(0, 9) inputs is not finite floating point")
    return out


def _check_elementwise(module, z, out, where: str) -> None:
    from .stacked import apply_to_stack

    with torch.no_grad():
        # The same numbers elsewhere (flipped) and fewer of them (a block): what depends on a
        # position or on the other inputs changes.
        flipped = module(z.flip(0).flip(1)).flip(0).flip(1)
        block = module(z[: len(z) // 4, : z.shape[1] // 4].contiguous())
        if not (torch.allclose(flipped, out, rtol=1e-5, atol=1e-6) and torch.allclose(block, out[: len(z) // 4, : z.shape[1] // 4], rtol=1e-5, atol=1e-6)):
            raise PluginError(f"{where}: is declared elementwise, but an output depends on other inputs than its own; declare elementwise=False (its runs then train solo)")
        params = dict(module.named_parameters())
        if not params:
            return
        # Two members with parameters of their own, applied as a fused group applies them.
        other = {name: p.detach() * 1.5 + 0.125 for name, p in params.items()}
        stacked = {name: torch.stack([p.detach(), other[name]]) for name, p in params.items()}
        together = apply_to_stack(module, torch.stack([z, z]), stacked)
        alone = torch.func.functional_call(module, other, (z,))
        if not (torch.allclose(together[0], out, rtol=1e-5, atol=1e-6) and torch.allclose(together[1], alone, rtol=1e-5, atol=1e-6)):
            raise PluginError(f"{where}: is declared elementwise, but with its parameters stacked per member (shaped [members, 1, ...] to broadcast) "
                              f"it does not compute each member's own output; declare elementwise=False (its runs then train solo)")


def activation_gain_of(spec: Activation, params: dict, module=None, where: str = "activation") -> float:
    """A plugin activation's init gain for the config's `params`."""
    from .formula import second_moment_gain

    gain = spec.gain
    if callable(gain):
        try:
            return float(gain(**params))
        except Exception as e:
            raise PluginError(f"{where}: its gain function raised {type(e).__name__}: {_first_line(e)}") from e
    if gain == "auto":
        if not spec.elementwise:
            raise PluginError(f"{where}: gain 'auto' integrates an elementwise activation; give a number or a function of the parameters")
        module = module if module is not None else spec.factory(**params)
        try:
            with torch.no_grad():
                return second_moment_gain(lambda z: module(z.float()))
        except ValueError as e:
            raise PluginError(f"{where}: gain 'auto': {e}; give a number") from e
    if isinstance(gain, bool) or not isinstance(gain, (int, float)):
        raise PluginError(f"{where}: its gain is {gain!r}; give a number, 'auto' or a function of the parameters")
    return float(gain)


def check_initializer(function, where: str) -> None:
    """An initializer plugin: called as the built-ins are on a probe matrix, it fills it in place
    with finite numbers."""
    if not callable(function):
        raise PluginError(f"{where}: is a {type(function).__name__}; an initializer is a function (tensor, fan_in, fan_out, act_gain, **params)")
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError) as e:
        raise PluginError(f"{where}: has no signature to read ({e})") from e
    if len(parameters) < 4 or any(p.default is not inspect.Parameter.empty for p in parameters[:4]):
        raise PluginError(f"{where}: an initializer takes (tensor, fan_in, fan_out, act_gain) first, then its parameters with defaults")
    params = {p.name: p.default for p in parameters[4:]}
    if any(d is inspect.Parameter.empty or not isinstance(d, (bool, int, float, str)) for d in params.values()):
        raise PluginError(f"{where}: each parameter after (tensor, fan_in, fan_out, act_gain) needs a number, boolean or string default")
    tensor = torch.full((16, 8), float("nan"))
    try:
        with torch.no_grad():
            function(tensor, 8, 16, 1.0, **params)
    except Exception as e:
        raise PluginError(f"{where}: raised {type(e).__name__} on a 16 x 8 probe matrix: {_first_line(e)}") from e
    if tensor.shape != (16, 8) or not torch.isfinite(tensor).all():
        raise PluginError(f"{where}: did not fill a 16 x 8 probe matrix with finite numbers in place")


def _entry_kind(kind: str) -> str:
    return "actexp.components.Activation" if kind == "activation" else "an initializer function"


def _first_line(error: BaseException) -> str:
    lines = str(error).splitlines()
    return lines[0][:200] if lines else type(error).__name__
