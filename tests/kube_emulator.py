#!/usr/bin/env python3
"""An emulated Kubernetes API server for the tests: kmock on a loopback port.

    python3 tests/kube_emulator.py [--host 127.0.0.1] [--port 0] [--port-file PATH]
                                   [--exit-on-stdin-eof]

It prints the bound port on stdout (and writes it to --port-file, atomically), logs one
line per request on stderr, and serves until SIGTERM/SIGINT (or, with
--exit-on-stdin-eof, until its standard input closes, so that it dies with the test that
started it). State is in memory only. Needs `kmock` from PyPI (pinned in
scripts/install-test-deps).

kmock (KubernetesEmulator) brings the HTTP server, URL parsing into resource/namespace/
name/subresource, API discovery (/api, /apis, /apis/GROUP/VERSION), Kubernetes-shaped
errors and the object store with its history. But kmock 0.8 has no resourceVersion
(kube-rs' watcher refuses objects without one), re-lists on every watch and can lose an
event written between that re-list and the start of its live stream, answers PUT with
404, applies every PATCH as a merge (or an array as a JSON patch) whatever its content
type and to the whole object even on /status, and names its errors in its own words
(kube-rs' is_already_exists() looks for the reason AlreadyExists). So ApiServer below
serves every object request itself, on kmock's server, store and discovery:

- resourceVersion: one counter for the whole server, stamped on every write; lists carry
  it; PUT, PATCH and DELETE preconditions on it (and on uid) answer 409 Conflict.
- watch: from resourceVersion N it replays the retained events after N (the last 10,000
  per resource; older answers an ERROR event 410 Expired, as a compacted etcd does), then
  streams live; without one (or "0") it starts with ADDED for every object;
  sendInitialEvents=true ends those with the initial-events-end BOOKMARK; timeoutSeconds
  ends the stream. labelSelector and fieldSelector (metadata.name, metadata.namespace)
  filter lists and watches, and an object that stops or starts matching arrives as
  DELETED or ADDED, as from a real server.
- create stamps uid, creationTimestamp, resourceVersion, generation (custom resources),
  managedFields, the namespace from the URL, a name from generateName; drops the status
  of a resource with a status subresource.
- PUT and PATCH (application/merge-patch+json, application/json-patch+json,
  application/strategic-merge-patch+json, application/apply-patch+yaml) on the object or
  its /status: the object's request cannot change its status, the /status request only
  changes the status; generation goes up when anything but metadata and status changes;
  a write that changes nothing is a no-op (same resourceVersion, no watch event), which
  keeps a controller that writes its status from waking itself forever.
- DELETE honours finalizers: deletionTimestamp first, gone when the last one is removed.
- Secrets: stringData is folded into data (base64), as the real server does.

Deviations from a real API server (what a test against this cannot see):
- No authentication, authorisation, admission, schema validation, pruning, defaulting or
  CEL rules: an invalid RelayPolicy is stored as sent. Namespaces need not exist.
- Server-side apply tracks no field ownership: an apply replaces each top-level field it
  names (spec, status, data, ...) whole and merges metadata labels, annotations and
  finalizers, as if one manager owned them all. So there are no apply conflicts (force
  changes nothing), and a field that an applier stops sending is kept, not removed.
  Apply still requires fieldManager, apiVersion and kind, as the real server does.
  managedFields has one entry per manager, operation and subresource, with empty
  fieldsV1.
- Strategic merge patch is a JSON merge patch (no list merge keys or $patch
  directives); custom resources refuse it with 415, as the real server does.
- Lists ignore limit/continue (one page) and resourceVersion (always the latest).
- Watches send no periodic bookmarks; fieldSelector knows only metadata.name and
  metadata.namespace; no deletecollection, no graceful deletion of pods, no
  ownerReference garbage collection, no namespace cascade.
- Bodies are JSON (YAML only when PyYAML is installed); responses are JSON only; a
  create answers 200, not 201; a delete without finalizers answers a Success Status.
- Finalizers can be added to an object being deleted; a uid in a PUT body is not a
  precondition (the stored one is kept).
- Only the resources in RESOURCES below exist.
- Built on kmock's internals (KubernetesEmulator._handle and its fallback reactions), which
  is why kmock is pinned.
"""

import argparse
import asyncio
import base64
import collections
import copy
import datetime
import os
import re
import secrets
import signal
import sys
import threading
import traceback
import uuid
from typing import Any

import aiohttp.web  # kmock serves with aiohttp
import jsonpatch  # a dependency of kmock
import kmock

try:  # only for YAML request bodies (kubectl); kube-rs sends JSON
    import yaml
except ImportError:  # pragma: no cover
    yaml = None


class Kind:
    """What the emulator knows of one resource."""

    def __init__(self, kind: str, namespaced: bool, *, status: bool = False,
                 generation: bool = False, custom: bool = False) -> None:
        self.kind = kind
        self.namespaced = namespaced
        self.status = status  # has the status subresource
        self.generation = generation  # tracks metadata.generation
        self.custom = custom  # a custom resource: no strategic merge patch


# (group, version, plural) -> Kind. RelayPolicy as src/policy/model.rs declares it.
RESOURCES = {
    ('sluice.dev', 'v1alpha1', 'relaypolicies'):
        Kind('RelayPolicy', True, status=True, generation=True, custom=True),
    ('', 'v1', 'secrets'): Kind('Secret', True),
    ('', 'v1', 'configmaps'): Kind('ConfigMap', True),
    ('', 'v1', 'namespaces'): Kind('Namespace', False),
    ('', 'v1', 'events'): Kind('Event', True),
    ('events.k8s.io', 'v1', 'events'): Kind('Event', True),
    ('coordination.k8s.io', 'v1', 'leases'): Kind('Lease', True),
}

WATCH_LOG = 10_000  # events kept per resource for watches that resume

MERGE = 'application/merge-patch+json'
JSON_PATCH = 'application/json-patch+json'
STRATEGIC = 'application/strategic-merge-patch+json'
APPLY = 'application/apply-patch+yaml'


class ApiError(kmock.KubernetesError):
    """An error answered as a Kubernetes Status."""


def api_error(code: int, reason: str, message: str, **details: Any) -> ApiError:
    return ApiError(status=code, reason=reason, message=message, details=details)


# Standard Status reasons for the errors kmock raises itself (kube-rs matches on them).
REASONS = {400: 'BadRequest', 404: 'NotFound', 405: 'MethodNotAllowed', 409: 'Conflict',
           410: 'Expired', 415: 'UnsupportedMediaType', 422: 'Invalid'}


def api_version(res: kmock.resource) -> str:
    return f'{res.group}/{res.version}' if res.group else res.version


def now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime('%Y-%m-%dT%H:%M:%SZ')


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(doc: dict, operations: list) -> dict:
    """RFC 6902, with the API server's (evanphx/json-patch's) leniency: a `test` for null
    passes on a missing member, which kube-rs' finalizer() relies on."""
    for op in operations:
        if not isinstance(op, dict):
            raise api_error(400, 'BadRequest', 'a JSON patch operation is an object')
        if op.get('op') == 'test' and op.get('value') is None:
            try:
                jsonpatch.JsonPointer(op.get('path', '')).resolve(doc)
            except jsonpatch.JsonPointerException:
                continue
        try:
            doc = jsonpatch.apply_patch(doc, [op])
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
            raise api_error(422, 'Invalid', f'the JSON patch does not apply: {e}')
    return doc


def omit_empty(meta: dict) -> None:
    """ObjectMeta's fields are all omitempty: an empty list or map is no field at all."""
    for key in [k for k, v in meta.items() if v is None or v == [] or v == {}]:
        del meta[key]


def without_bookkeeping(obj: dict) -> dict:
    """The object as compared to decide whether a write changed anything."""
    obj = copy.deepcopy(obj)
    meta = obj.get('metadata', {})
    meta.pop('resourceVersion', None)
    meta.pop('managedFields', None)
    return obj


def body_of(obj: dict, kind: Kind) -> dict:
    """What metadata.generation counts changes of."""
    return {k: v for k, v in obj.items()
            if k not in ('metadata', 'apiVersion', 'kind') and not (kind.status and k == 'status')}


# ABNF of label selectors (simplified): term *( "," term ), where term is
# key | "!" key | key ("=" | "==" | "!=") value | key ("in" | "notin") "(" values ")".
LABEL_TERM = re.compile(
    r'\s*(?:(?P<not>!)\s*(?P<absent>[^\s,!=()]+)'
    r'|(?P<setkey>[^\s,!=()]+)\s+(?P<setop>in|notin)\s*\((?P<values>[^)]*)\)'
    r'|(?P<key>[^\s,!=()]+)\s*(?:(?P<op>==|=|!=)\s*(?P<value>[^\s,!=()]*))?)\s*(?:,|$)')


def label_matcher(selector: str | None):
    if not selector:
        return lambda labels: True
    tests = []
    pos = 0
    while pos < len(selector):
        m = LABEL_TERM.match(selector, pos)
        if m is None or m.end() == pos:
            raise api_error(400, 'BadRequest', f'unable to parse requirement: {selector!r}')
        pos = m.end()
        if m['absent']:
            tests.append(lambda labels, k=m['absent']: k not in labels)
        elif m['setkey']:
            values = {v.strip() for v in m['values'].split(',')}
            if m['setop'] == 'in':
                tests.append(lambda labels, k=m['setkey'], vs=values: labels.get(k) in vs)
            else:
                tests.append(lambda labels, k=m['setkey'], vs=values: labels.get(k) not in vs)
        elif m['op'] == '!=':
            tests.append(lambda labels, k=m['key'], v=m['value']: labels.get(k) != v)
        elif m['op']:
            tests.append(lambda labels, k=m['key'], v=m['value']: labels.get(k) == v)
        else:
            tests.append(lambda labels, k=m['key']: k in labels)
    return lambda labels: all(test(labels) for test in tests)


def field_matcher(selector: str | None):
    if not selector:
        return lambda meta: True
    tests = []
    for term in selector.split(','):
        m = re.fullmatch(r'\s*([\w.]+)\s*(==|=|!=)\s*([^\s]*)\s*', term)
        if m is None:
            raise api_error(400, 'BadRequest', f'invalid field selector: {selector!r}')
        field, op, value = m.groups()
        if field not in ('metadata.name', 'metadata.namespace'):
            raise api_error(400, 'BadRequest', f'field label not supported: {field}')
        key = field.split('.', 1)[1]
        if op == '!=':
            tests.append(lambda meta, k=key, v=value: (meta.get(k) or '') != v)
        else:
            tests.append(lambda meta, k=key, v=value: (meta.get(k) or '') == v)
    return lambda meta: all(test(meta) for test in tests)


class Watch:
    """One open watch: its filter and the queue its stream reads."""

    def __init__(self, request: kmock.Request) -> None:
        labels = label_matcher(request.params.get('labelSelector'))
        fields = field_matcher(request.params.get('fieldSelector'))
        namespace, name = request.namespace, request.name

        def matches(obj: dict | None) -> bool:
            if obj is None:
                return False
            meta = obj.get('metadata', {})
            return ((namespace is None or meta.get('namespace') == namespace)
                    and (name is None or meta.get('name') == name)
                    and labels(meta.get('labels') or {}) and fields(meta))

        self.matches = matches
        self.queue: asyncio.Queue = asyncio.Queue()

    def event(self, type_: str, obj: dict, old: dict | None) -> dict | None:
        """The event this watch sees, if any: a change of selector match is ADDED/DELETED."""
        new_in, old_in = self.matches(obj), self.matches(old)
        if type_ == 'MODIFIED' and new_in and not old_in:
            type_ = 'ADDED'
        elif type_ == 'MODIFIED' and old_in and not new_in:
            type_ = 'DELETED'
        elif not new_in:
            return None
        return {'type': type_, 'object': obj}


class ApiServer(kmock.KubernetesEmulator):
    """kmock's emulator with the object requests served as a real API server would.

    State changes happen in synchronous methods: with no await inside, each is atomic on
    the event loop, and a watch that registers itself sees every later event.
    """

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()  # discovery, list/watch/fetch/create/patch/delete
        self.fallback[kmock.method.PUT] << self._serve_replace
        self.revision = 0
        self.logs: dict[Any, collections.deque] = collections.defaultdict(
            lambda: collections.deque(maxlen=WATCH_LOG))
        self.log_floor: dict[Any, int] = collections.defaultdict(int)
        self.watches: dict[Any, set[Watch]] = collections.defaultdict(set)
        for (group, version, plural), kind in RESOURCES.items():
            self.resources[kmock.resource(group, version, plural)] = kmock.ResourceInfo(
                kind=kind.kind, namespaced=kind.namespaced, singular=kind.kind.lower(),
                subresources={'status'} if kind.status else set(),
                verbs={'create', 'delete', 'get', 'list', 'patch', 'update', 'watch'})

    # kmock's KubernetesEmulator._handle writes every POST/PATCH/DELETE into its store
    # before dispatching; skip that, since the reactions below do the writing.
    #
    # kmock keeps every request served, for a test's assertions, and matches each new one
    # to a reaction by scanning that whole history once per reaction: the cost of a
    # request grows with the requests before it (some 50 ms after a few hundred, seconds
    # after a few thousand). Nothing reads the history here, so only the request being
    # served is kept (kmock has just appended it; the matching below is synchronous).
    async def _handle(self, request: kmock.Request) -> Any:
        del self._requests[:-1]
        query = f'?{request.url.query_string}' if request.url.query_string else ''
        print(f'{request.method.value} {request.url.path}{query}', file=sys.stderr, flush=True)
        return await kmock.RawHandler._handle(self, request)

    async def _render_error(self, exc: Exception) -> Any:
        if isinstance(exc, ApiError):
            details = exc.details
        elif isinstance(exc, kmock.KubernetesError):
            exc = api_error(exc.status, REASONS.get(exc.status, 'InternalError'),
                            exc.message or exc.reason or repr(exc))
            details = {}
        else:
            traceback.print_exception(exc, file=sys.stderr)
            exc = api_error(500, 'InternalError', repr(exc))
            details = {}
        print(f'  -> {exc.status} {exc.reason}: {exc.message}', file=sys.stderr, flush=True)
        return aiohttp.web.json_response({
            'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Failure',
            'message': exc.message, 'reason': exc.reason, 'details': details,
            'code': exc.status,
        }, status=exc.status)

    # --- resources, keys, bodies

    def kind_of(self, request: kmock.Request) -> Kind:
        res = request.resource
        kind = RESOURCES.get((res.group, res.version, res.plural)) if res else None
        if kind is None:
            raise api_error(404, 'NotFound', 'the server could not find the requested resource')
        if kind.namespaced is False and request.namespace is not None:
            raise api_error(404, 'NotFound', 'the server could not find the requested resource')
        if request.subresource not in (None, 'status') or (
                request.subresource == 'status' and not kind.status):
            raise api_error(404, 'NotFound', 'the server could not find the requested resource')
        return kind

    @staticmethod
    def qualified(request: kmock.Request) -> str:
        res = request.resource
        return f'{res.plural}.{res.group}' if res.group else res.plural

    def not_found(self, request: kmock.Request, name: str) -> ApiError:
        return api_error(404, 'NotFound', f'{self.qualified(request)} "{name}" not found',
                         name=name, group=request.resource.group, kind=request.resource.plural)

    def conflict(self, request: kmock.Request, name: str) -> ApiError:
        return api_error(
            409, 'Conflict',
            f'Operation cannot be fulfilled on {self.qualified(request)} "{name}": the object '
            'has been modified; please apply your changes to the latest version and try again',
            name=name, group=request.resource.group, kind=request.resource.plural)

    @staticmethod
    def body(request: kmock.Request) -> Any:
        if request.data is not None and not isinstance(request.data, (dict, list)):
            raise api_error(400, 'BadRequest', 'the body is not a JSON object or array')
        if request.data is None and request.body.strip():
            if yaml is None:
                raise api_error(415, 'UnsupportedMediaType', 'only JSON bodies are understood')
            try:
                return yaml.safe_load(request.body)
            except yaml.YAMLError as e:
                raise api_error(400, 'BadRequest', f'cannot decode the body: {e}')
        return copy.deepcopy(request.data)

    def stored(self, request: kmock.Request, name: str) -> dict | None:
        key = (request.resource, request.namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return copy.deepcopy(self.objects[key].raw)

    @staticmethod
    def manager(request: kmock.Request) -> str:
        return (request.params.get('fieldManager')
                or request.headers.get('User-Agent', 'unknown').split('/')[0])

    # --- writing and telling the watches

    def record(self, request: kmock.Request, type_: str, obj: dict, old: dict | None) -> None:
        """Stores nothing; logs the event and hands it to every open watch."""
        log = self.logs[request.resource]
        if len(log) == log.maxlen:
            self.log_floor[request.resource] = log[0][0]
        log.append((self.revision, type_, obj, old))
        for watch in self.watches[request.resource]:
            event = watch.event(type_, obj, old)
            if event is not None:
                watch.queue.put_nowait(event)

    def bump(self, obj: dict) -> dict:
        self.revision += 1
        obj.setdefault('metadata', {})['resourceVersion'] = str(self.revision)
        return obj

    def touch_managed(self, request: kmock.Request, obj: dict, operation: str) -> None:
        entries = obj['metadata'].get('managedFields') or []
        manager = self.manager(request)
        entries = [e for e in entries if (e.get('manager'), e.get('operation'), e.get('subresource'))
                   != (manager, operation, request.subresource)]
        entry = {'manager': manager, 'operation': operation, 'apiVersion': api_version(request.resource),
                 'time': now(), 'fieldsType': 'FieldsV1', 'fieldsV1': {}}
        if request.subresource:
            entry['subresource'] = request.subresource
        obj['metadata']['managedFields'] = entries + [entry]

    def typed(self, request: kmock.Request, kind: Kind, obj: dict) -> dict:
        obj['apiVersion'] = api_version(request.resource)
        obj['kind'] = kind.kind
        omit_empty(obj['metadata'])
        if kind.kind == 'Secret' and 'stringData' in obj:
            data = obj.setdefault('data', {}) or {}
            for key, value in (obj.pop('stringData') or {}).items():
                data[key] = base64.b64encode(str(value).encode()).decode()
            obj['data'] = data
        return obj

    def create(self, request: kmock.Request, kind: Kind, obj: dict, operation: str) -> dict:
        meta = obj.setdefault('metadata', {})
        if not isinstance(meta, dict):
            raise api_error(400, 'BadRequest', 'metadata must be an object')
        if not meta.get('name') and meta.get('generateName'):
            meta['name'] = meta['generateName'] + secrets.token_hex(3)[:5]
        name = meta.get('name')
        if not name:
            raise api_error(422, 'Invalid', 'metadata.name: Required value: name or generateName is required')
        if kind.namespaced:
            if request.namespace is None:
                raise api_error(404, 'NotFound', 'the server could not find the requested resource')
            if meta.get('namespace') not in (None, '', request.namespace):
                raise api_error(400, 'BadRequest', 'the namespace of the provided object does '
                                'not match the namespace sent on the request')
            meta['namespace'] = request.namespace
        else:
            meta.pop('namespace', None)
        if self.stored(request, name) is not None:
            raise api_error(409, 'AlreadyExists', f'{self.qualified(request)} "{name}" already exists',
                            name=name, group=request.resource.group, kind=request.resource.plural)
        if kind.status:
            obj.pop('status', None)
        for field in ('resourceVersion', 'deletionTimestamp', 'deletionGracePeriodSeconds',
                      'managedFields', 'generation'):
            meta.pop(field, None)
        meta['uid'] = str(uuid.uuid4())
        meta['creationTimestamp'] = now()
        if kind.generation:
            meta['generation'] = 1
        self.typed(request, kind, obj)
        self.touch_managed(request, obj, operation)
        if request.params.get('dryRun'):
            return obj
        self.bump(obj)
        key = (request.resource, request.namespace, name)
        if key in self.objects:
            self.objects[key].history.append(copy.deepcopy(obj))
        else:
            self.objects[key] = copy.deepcopy(obj)
        self.record(request, 'ADDED', copy.deepcopy(obj), None)
        return obj

    def commit(self, request: kmock.Request, kind: Kind, old: dict, new: dict, operation: str) -> dict:
        """Writes `new` over `old` (both whole objects) as PUT and PATCH do."""
        name = old['metadata']['name']
        if not isinstance(new.get('metadata'), dict):
            raise api_error(400, 'BadRequest', 'metadata must be an object')
        wanted = new['metadata'].get('resourceVersion')
        if wanted and wanted != old['metadata'].get('resourceVersion'):
            raise self.conflict(request, name)
        if request.subresource == 'status':
            status = new.get('status')
            new = copy.deepcopy(old)
            if status is None:
                new.pop('status', None)
            else:
                new['status'] = status
        elif kind.status:
            new['status'] = copy.deepcopy(old.get('status'))
            if new['status'] is None:
                new.pop('status')
        meta = new['metadata']
        for field in ('name', 'namespace', 'uid', 'creationTimestamp', 'deletionTimestamp',
                      'deletionGracePeriodSeconds', 'generation', 'managedFields', 'resourceVersion'):
            if field in old['metadata']:
                meta[field] = old['metadata'][field]
            else:
                meta.pop(field, None)
        self.typed(request, kind, new)
        if kind.generation and body_of(new, kind) != body_of(old, kind):
            meta['generation'] = old['metadata'].get('generation', 0) + 1
        if without_bookkeeping(new) == without_bookkeeping(old):
            return old  # a no-op: no new resourceVersion, no event
        self.touch_managed(request, new, operation)
        if request.params.get('dryRun'):
            return new
        self.bump(new)
        key = (request.resource, request.namespace, name)
        self.objects[key].history.append(copy.deepcopy(new))
        self.record(request, 'MODIFIED', copy.deepcopy(new), old)
        if meta.get('deletionTimestamp') and not meta.get('finalizers'):
            self.remove(request, new)
        return new

    def remove(self, request: kmock.Request, obj: dict) -> None:
        gone = self.bump(copy.deepcopy(obj))
        self.objects[(request.resource, request.namespace, obj['metadata']['name'])].delete()
        self.record(request, 'DELETED', gone, obj)

    # --- the reactions (kmock calls them by action, as fallbacks)

    def _serve_fetch(self, request: kmock.Request) -> dict:
        self.kind_of(request)
        obj = self.stored(request, request.name)
        if obj is None:
            raise self.not_found(request, request.name)
        return obj

    def _serve_list(self, request: kmock.Request) -> dict:
        kind = self.kind_of(request)
        watch = Watch(request)
        res = request.resource
        items = [copy.deepcopy(obj.raw) for (r, _, _), obj in self.objects.items()
                 if r == res and not obj.deleted]
        return {
            'apiVersion': api_version(res),
            'kind': f'{kind.kind}List',
            'metadata': {'resourceVersion': str(self.revision)},
            'items': [obj for obj in items if watch.matches(obj)],
        }

    async def _serve_watch(self, request: kmock.Request):
        kind = self.kind_of(request)
        watch = Watch(request)
        since = request.params.get('resourceVersion') or '0'
        initial = request.params.get('sendInitialEvents') == 'true'
        timeout = request.params.get('timeoutSeconds')
        deadline = asyncio.get_running_loop().time() + float(timeout) if timeout else None
        if not since.isdigit():
            raise api_error(400, 'BadRequest', f'invalid resourceVersion: {since!r}')
        # Synchronous from here to the registration: no event can slip in between.
        res = request.resource
        if since == '0' or initial:
            backlog = [{'type': 'ADDED', 'object': copy.deepcopy(obj.raw)}
                       for (r, _, _), obj in self.objects.items()
                       if r == res and not obj.deleted and watch.matches(obj.raw)]
            if initial:
                backlog.append({'type': 'BOOKMARK', 'object': {
                    'apiVersion': api_version(res),
                    'kind': kind.kind,
                    'metadata': {'resourceVersion': str(self.revision),
                                 'annotations': {'k8s.io/initial-events-end': 'true'}}}})
        elif int(since) < self.log_floor[res]:
            backlog = [{'type': 'ERROR', 'object': {
                'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Failure',
                'reason': 'Expired', 'code': 410,
                'message': f'too old resource version: {since} ({self.log_floor[res] + 1})'}}]
            deadline = 0.0
        else:
            backlog = [event for rv, type_, obj, old in self.logs[res] if rv > int(since)
                       for event in [watch.event(type_, copy.deepcopy(obj), old)] if event]
        self.watches[res].add(watch)
        try:
            yield b''  # the headers now, even if nothing happens for a while
            for event in backlog:
                yield event
            while True:
                left = None if deadline is None else deadline - asyncio.get_running_loop().time()
                if left is not None and left <= 0:
                    return
                try:
                    yield await asyncio.wait_for(watch.queue.get(), left)
                except TimeoutError:
                    return
        finally:
            self.watches[res].discard(watch)

    def _serve_create(self, request: kmock.Request) -> dict:
        kind = self.kind_of(request)
        obj = self.body(request)
        if not isinstance(obj, dict):
            raise api_error(400, 'BadRequest', 'the body is not an object')
        return self.create(request, kind, obj, 'Update')

    def _serve_replace(self, request: kmock.Request) -> dict:
        if request.resource is None or request.name is None:
            raise api_error(405, 'MethodNotAllowed', 'PUT needs an object URL')
        kind = self.kind_of(request)
        new = self.body(request)
        if not isinstance(new, dict) or not isinstance(new.get('metadata', {}), dict):
            raise api_error(400, 'BadRequest', 'the body is not an object')
        if new.get('metadata', {}).get('name') not in (None, request.name):
            raise api_error(400, 'BadRequest', 'the name of the object does not match the URL')
        old = self.stored(request, request.name)
        if old is None:
            raise self.not_found(request, request.name)
        new.setdefault('metadata', {})
        return self.commit(request, kind, old, new, 'Update')

    def _serve_update(self, request: kmock.Request) -> dict:  # PATCH
        kind = self.kind_of(request)
        content_type = request.headers.get('Content-Type', '').split(';')[0].strip()
        patch = self.body(request)
        old = self.stored(request, request.name)
        if content_type == APPLY:
            return self.apply(request, kind, old, patch)
        if old is None:
            raise self.not_found(request, request.name)
        if content_type == JSON_PATCH:
            if not isinstance(patch, list):
                raise api_error(400, 'BadRequest', 'a JSON patch is an array of operations')
            new = json_patch(old, patch)
        elif content_type == MERGE or (content_type == STRATEGIC and not kind.custom):
            if not isinstance(patch, dict):
                raise api_error(400, 'BadRequest', 'a merge patch is an object')
            new = merge_patch(old, patch)
        else:
            raise api_error(415, 'UnsupportedMediaType',
                            f'the body of the request was in an unknown format - accepted '
                            f'media types include: {JSON_PATCH}, {MERGE}, {APPLY}')
        return self.commit(request, kind, old, new, 'Update')

    def apply(self, request: kmock.Request, kind: Kind, old: dict | None, applied: Any) -> dict:
        """Server-side apply, as if one manager owned every field it names."""
        if not request.params.get('fieldManager'):
            raise api_error(422, 'Invalid', 'PatchOptions.meta.k8s.io "" is invalid: '
                            'fieldManager: Required value: is required for apply patch')
        if not isinstance(applied, dict):
            raise api_error(400, 'BadRequest', 'an apply patch is an object')
        wanted = api_version(request.resource)
        if applied.get('apiVersion') != wanted or applied.get('kind') != kind.kind:
            raise api_error(400, 'BadRequest', f'apiVersion and kind must be {wanted} '
                            f'{kind.kind}, not {applied.get("apiVersion")} {applied.get("kind")}')
        meta = applied.get('metadata') or {}
        if meta.get('name') not in (None, request.name):
            raise api_error(400, 'BadRequest', 'the name of the object does not match the URL')
        if old is None:
            if request.subresource is not None:
                raise self.not_found(request, request.name)
            applied.setdefault('metadata', {})['name'] = request.name
            return self.create(request, kind, applied, 'Apply')
        new = copy.deepcopy(old)
        new_meta = new['metadata']
        for field in ('labels', 'annotations'):
            if isinstance(meta.get(field), dict):
                new_meta[field] = {**(new_meta.get(field) or {}), **meta[field]}
        if isinstance(meta.get('finalizers'), list):
            have = new_meta.get('finalizers') or []
            new_meta['finalizers'] = have + [f for f in meta['finalizers'] if f not in have]
        if meta.get('resourceVersion'):
            new_meta['resourceVersion'] = meta['resourceVersion']
        for key, value in applied.items():
            if key not in ('apiVersion', 'kind', 'metadata'):
                new[key] = copy.deepcopy(value)
        return self.commit(request, kind, old, new, 'Apply')

    def _serve_delete(self, request: kmock.Request) -> dict:
        self.kind_of(request)
        if request.subresource is not None:
            raise api_error(405, 'MethodNotAllowed', 'a subresource cannot be deleted')
        old = self.stored(request, request.name)
        if old is None:
            raise self.not_found(request, request.name)
        options = self.body(request) or {}
        preconditions = options.get('preconditions') or {} if isinstance(options, dict) else {}
        for field in ('resourceVersion', 'uid'):
            if preconditions.get(field) and preconditions[field] != old['metadata'].get(field):
                raise self.conflict(request, request.name)
        if request.params.get('dryRun'):
            return old
        if old['metadata'].get('finalizers'):
            if old['metadata'].get('deletionTimestamp'):
                return old
            new = copy.deepcopy(old)
            new['metadata']['deletionTimestamp'] = now()
            new['metadata']['deletionGracePeriodSeconds'] = 0
            self.bump(new)
            key = (request.resource, request.namespace, request.name)
            self.objects[key].history.append(copy.deepcopy(new))
            self.record(request, 'MODIFIED', copy.deepcopy(new), old)
            return new
        self.remove(request, old)
        return {'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Success',
                'details': {'name': request.name, 'group': request.resource.group,
                            'kind': request.resource.plural, 'uid': old['metadata'].get('uid')}}


def announce(port: int, port_file: str | None) -> None:
    print(port, flush=True)
    if port_file:
        partial = f'{port_file}.partial'
        with open(partial, 'w', encoding='utf-8') as f:
            f.write(f'{port}\n')
        os.replace(partial, port_file)


async def serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.exit_on_stdin_eof:
        def wait_for_eof() -> None:
            while sys.stdin.buffer.read(4096):
                pass
            loop.call_soon_threadsafe(stop.set)
        threading.Thread(target=wait_for_eof, daemon=True).start()
    async with ApiServer() as emulator, kmock.Server(emulator, host=args.host, port=args.port or None) as server:
        announce(server.port, args.port_file)
        await stop.wait()
        # Open watches would hold aiohttp's shutdown for a minute, and the state is in
        # memory only: nothing is lost by leaving at once.
        sys.stderr.flush()
        os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=0, help='0 picks a free port')
    parser.add_argument('--port-file', help='where to write the bound port')
    parser.add_argument('--exit-on-stdin-eof', action='store_true',
                        help='exit when standard input closes (the parent died)')
    asyncio.run(serve(parser.parse_args()))


if __name__ == '__main__':
    main()
