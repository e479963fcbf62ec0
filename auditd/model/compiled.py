"""Fast paths for the two schemas on the write path, compiled from the marshmallow schemas themselves.

marshmallow stays the one definition of the wire format; these only take its per-call machinery
(error stores, hook dispatch, accessor lookups) out of the common case, which costs more than the
fields' own work. Each compiled function is built at import from the schema's fields, validators
and hooks:

- `compile_load(schema)` handles a payload that is valid: each field's value is checked the way
  its own type and validators check it (inline for the built-in String and List with Length,
  OneOf and Regexp validators; through the field's own `deserialize` for anything else), then the schema's
  pre-load and schema-level validation hooks run as marshmallow runs them. Whenever anything does
  not fit (an error, an unknown key, a missing required field), it runs `schema.load` itself, so
  every error and its message is marshmallow's.
- `compile_dump(schema)` produces what `schema.dump` produces for a complete object.

A schema using something the compiler does not know gets marshmallow itself; tests check that the
compiled and the plain paths agree on valid and invalid input, and that the fast path is in use.
"""
import json
import re

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, missing, validate
from marshmallow.decorators import (POST_DUMP, POST_LOAD, PRE_DUMP, PRE_LOAD, VALIDATES,
                                    VALIDATES_SCHEMA)


class _Fallback(Exception):
    """The compiled path cannot decide: let marshmallow do it."""


# ---------------------------------------------------------------------------- load

def _inline_check(validator):
    """A plain predicate for a built-in validator, or None when there is none."""
    if type(validator) is validate.Length:
        low, high, equal = validator.min, validator.max, validator.equal
        if equal is not None:
            return lambda v: len(v) == equal
        return lambda v: (low is None or len(v) >= low) and (high is None or len(v) <= high)
    if type(validator) is validate.OneOf:
        choices = frozenset(validator.choices)
        return lambda v: v in choices
    if type(validator) is validate.Regexp and isinstance(validator.regex, re.Pattern):
        regex = validator.regex
        return lambda v: regex.match(v) is not None
    return None


def _value_loader(field):
    """fn(value, key, data) -> the loaded value, raising _Fallback where marshmallow must decide."""
    checks = [_inline_check(v) for v in field.validators]
    inline = (type(field) in (fields.String, fields.List) and all(checks)
              and not getattr(field, "pre_load", None) and not getattr(field, "post_load", None))
    if not inline:   # the field's own code, without the schema's machinery around it
        def load(value, key, data):
            try:
                return field.deserialize(value, key, data)
            except ValidationError:
                raise _Fallback from None
        return load

    allow_none = field.allow_none
    item = _value_loader(field.inner) if type(field) is fields.List else None

    def load(value, key, data):
        if value is None:
            if allow_none:
                return None
            raise _Fallback
        if item is None:
            if type(value) is not str:   # bytes and the rest: marshmallow decides
                raise _Fallback
        elif type(value) is list:
            value = [item(v, key, data) for v in value]
        else:
            raise _Fallback
        for check in checks:
            if not check(value):
                raise _Fallback
        return value
    return load


def compile_load(schema: Schema):
    """fn(payload: dict) -> what `schema.load(payload)` returns (or raises)."""
    hooks = type(schema).resolve_hooks()
    unsupported = (hooks[POST_LOAD] or hooks[VALIDATES] or schema.many or schema.partial
                   or schema.unknown not in (RAISE, EXCLUDE)
                   or any(many for _, many, _ in hooks[PRE_LOAD] + hooks[VALIDATES_SCHEMA])
                   or any(kw.get("pass_original") for _, _, kw in hooks[VALIDATES_SCHEMA]))
    plan = []
    for name, field in schema.load_fields.items():
        if field.load_default is not missing:
            unsupported = True
        plan.append((field.data_key or name, name, field.required, _value_loader(field)))
    if unsupported:
        return schema.load
    keys = frozenset(key for key, *_ in plan)
    pre_load = [getattr(schema, name) for name, _, _ in hooks[PRE_LOAD]]
    validators = [getattr(schema, name) for name, _, _ in hooks[VALIDATES_SCHEMA]]
    refuse_unknown = schema.unknown == RAISE

    def load(payload):
        try:
            if type(payload) is not dict:
                raise _Fallback
            data = payload
            for hook in pre_load:
                data = hook(data, many=False, partial=None, unknown=schema.unknown)
            if refuse_unknown and not keys.issuperset(data):
                raise _Fallback
            loaded = {}
            for key, name, required, value_loader in plan:
                value = data.get(key, missing)
                if value is missing:
                    if required:
                        raise _Fallback
                    continue
                loaded[name] = value_loader(value, key, data)
            for validator in validators:
                validator(loaded, partial=None, many=False, unknown=schema.unknown)
            return loaded
        except (_Fallback, ValidationError):
            return schema.load(payload)
    load.compiled = True
    return load


# ---------------------------------------------------------------------------- dump

def compile_dump(schema: Schema, **json_options):
    """fn(obj: dict) -> `json.dumps(schema.dump(obj), **json_options)`."""
    hooks = type(schema).resolve_hooks()
    plain = json.JSONEncoder(**json_options).encode

    def marshmallow_dump(obj):
        return plain(schema.dump(obj))

    if hooks[PRE_DUMP] or hooks[POST_DUMP] or schema.many:
        return marshmallow_dump
    plan = []
    for name, field in schema.dump_fields.items():
        key = field.data_key or name
        if type(field) is fields.Function and field.serialize_func is not None:
            plan.append((key, None, field.serialize_func))
        elif type(field) is fields.String and field.attribute is None:
            plan.append((key, name, field))
        else:   # any other field: its own serialize, still without the schema's machinery
            plan.append((key, None, lambda obj, f=field, n=name: f.serialize(n, obj)))

    def dump(obj):
        try:
            out = {}
            for key, attr, how in plan:
                if attr is None:
                    out[key] = how(obj)
                else:
                    value = obj[attr]
                    out[key] = value if value is None or type(value) is str \
                        else how._serialize(value, attr, obj)
            return plain(out)
        except KeyError:   # an incomplete object: marshmallow leaves out what is missing
            return marshmallow_dump(obj)
    dump.compiled = True
    return dump
