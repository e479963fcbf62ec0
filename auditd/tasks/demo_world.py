"""The demo's world: a node cluster, a stack of services and containers, three days of their
history as fixture items, and the endless operations the simulator plays live."""
import hashlib
import uuid as uuidlib
from dataclasses import dataclass, field

from ..model.actions import FINAL_STATES


def _object_uuid(name: str) -> str:
    """A stable uuid per demo object, so a restarted demo keeps talking about the same stack."""
    digest = hashlib.sha256(f"auditd-demo/{name}".encode()).digest()
    return str(uuidlib.UUID(bytes=digest[:16], version=4))


@dataclass
class World:
    cluster: str = ""
    nodes: dict = field(default_factory=dict)       # name -> uri
    stack: str = ""
    services: dict = field(default_factory=dict)    # name -> (uri, image)
    containers: dict = field(default_factory=dict)  # name -> (uri, service name, node name)


SERVICES = {"web": ("nginx:1.11-alpine", 2), "api": ("webshop/api:2.4.1", 2),
            "worker": ("webshop/worker:2.4.1", 1), "redis": ("redis:3.2", 1)}


def build_world() -> World:
    world = World()
    world.cluster = f"/api/infra/v1/nodecluster/{_object_uuid('nodecluster/production')}/"
    for i in (1, 2, 3):
        name = f"production-{i}"
        world.nodes[name] = f"/api/infra/v1/node/{_object_uuid('node/' + name)}/"
    world.stack = f"/api/app/v1/stack/{_object_uuid('stack/webshop')}/"
    node_names = list(world.nodes)
    n = 0
    for service, (image, count) in SERVICES.items():
        world.services[service] = (f"/api/app/v1/service/{_object_uuid('service/' + service)}/",
                                   image)
        for i in range(1, count + 1):
            name = f"{service}-{i}"
            world.containers[name] = (
                f"/api/app/v1/container/{_object_uuid('container/' + name)}/", service,
                node_names[n % len(node_names)])
            n += 1
    return world


PEOPLE = [  # user, ip, user agent, location
    ("admin", "203.0.113.17", "docker-cloud-cli/1.0.9 python-dockercloud/1.0.12",
     "New York, United States"),
    ("admin", "203.0.113.17", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_12_3) AppleWebKit/537.36 "
     "(KHTML, like Gecko) Chrome/56.0.2924.87 Safari/537.36", "New York, United States"),
    ("jdoe", "198.51.100.42", "docker-cloud-cli/1.0.9 python-dockercloud/1.0.12",
     "Berlin, Germany"),
    ("ci-bot", "192.0.2.8", "python-dockercloud/1.0.12", "Dublin, Ireland"),
]
SYSTEM = ("admin", "", "", "")     # automatic actions (autoredeploy, autorestart, deploys)


def _digest(rng) -> str:
    return "sha256:" + "".join(rng.choice("0123456789abcdef") for _ in range(64))


def _pull_lines(image: str, rng) -> list[str]:
    repo, _, tag = image.partition(":")
    layers = ["".join(rng.choice("0123456789abcdef") for _ in range(12)) for _ in range(3)]
    return ([f"Pulling image {image}", f"{tag}: Pulling from {repo}"]
            + [f"{layer}: Already exists" for layer in layers[:1]]
            + [f"{layer}: Pull complete" for layer in layers[1:]]
            + [f"Digest: {_digest(rng)}", f"Status: Downloaded newer image for {image}"])


def _replace_lines(world: World, container: str) -> list[str]:
    node = world.containers[container][2]
    return [f"Stopping container {container}", f"Removing container {container}",
            f"Creating container {container} on node {node}", f"Starting container {container}",
            f"Container {container} is running"]


class History:
    """Builds the demo's past as fixture items."""

    def __init__(self, world: World, namespace: str, now: int, rng):
        self.world, self.namespace, self.now, self.rng = world, namespace, now, rng
        self.items: list[dict] = []

    def add(self, name, obj, parents, method, path, ago, seconds, state, lines, who=None,
            body=None):
        user, ip, agent, location = who or self.rng.choice(PEOPLE)
        start = self.now - ago
        end = start + seconds if state in FINAL_STATES else None
        span = (end if end is not None else self.now) - start
        logs = [{"log": line, "timestamp": start + span * i // max(1, len(lines)),
                 "streamType": "stderr" if line.startswith(("Error", "ERROR")) else "stdout"}
                for i, line in enumerate(lines)]
        item = {"action": name, "object": obj, "parents": parents, "method": method,
                "path": path, "namespace": self.namespace, "user": user, "ip": ip,
                "user_agent": agent, "location": location, "state": state, "start_date": start,
                "is_user_action": who is not SYSTEM, "logs": logs}
        if end is not None:
            item["end_date"] = end
        if body is not None:
            item["body"] = body
        self.items.append(item)
        return item


HOUR, DAY = 3600, 86400


def demo_history(world: World, namespace: str, now: int, rng) -> list[dict]:
    """Three days of a node cluster and a stack, with actions in every state."""
    h = History(world, namespace, now, rng)
    admin = PEOPLE[0]
    cluster, stack = world.cluster, world.stack
    cluster_id = cluster.rstrip("/").rsplit("/", 1)[1]
    h.add("Node Cluster Create", cluster, [], "POST", "/api/infra/v1/nodecluster/",
          3 * DAY, 2, "Success", ["Node cluster production created (3 x t2.medium, us-east-1)"],
          admin, {"name": "production", "region": "/api/infra/v1/region/aws/us-east-1/",
                  "node_type": "/api/infra/v1/nodetype/aws/t2.medium/", "target_num_nodes": 3})
    h.add("Node Cluster Deploy", cluster, [], "POST", f"/api/infra/v1/nodecluster/{cluster_id}/"
          "deploy/", 3 * DAY - 10, 260, "Success",
          ["Deploying node cluster production: 3 nodes"]
          + [f"Node {n} provisioning requested" for n in world.nodes]
          + ["Node cluster production deployed: 3/3 nodes ready"], admin)
    for i, (name, uri) in enumerate(world.nodes.items()):
        node_id = uri.rstrip("/").rsplit("/", 1)[1]
        path = f"/api/infra/v1/node/{node_id}/deploy/"
        steps = [f"Launching instance for node {name} (t2.medium, us-east-1{'abc'[i]})",
                 f"Instance i-0{rng.randrange(16**7):07x} is running",
                 "Waiting for the Docker Cloud agent to connect",
                 "Agent connected: Docker 1.13.1, kernel 4.4.0-64-generic"]
        if name == "production-3":
            h.add("Node Deploy", uri, [cluster], "POST", path, 3 * DAY - 20, 600, "Failed",
                  steps[:3] + ["Error: timeout waiting for the agent on production-3 after 600s"],
                  SYSTEM)
            h.add("Node Deploy", uri, [cluster], "POST", path, 3 * DAY - 700, 190, "Success",
                  steps + [f"Node {name} deployed"], admin)
        else:
            h.add("Node Deploy", uri, [cluster], "POST", path, 3 * DAY - 20, 170 + 20 * i,
                  "Success", steps + [f"Node {name} deployed"], SYSTEM)

    stack_id = stack.rstrip("/").rsplit("/", 1)[1]
    h.add("Stack Create", stack, [], "POST", "/api/app/v1/stack/", 2 * DAY, 1, "Success",
          ["Stack webshop created with services: " + ", ".join(world.services)], admin,
          {"name": "webshop", "services": [{"name": s, "image": img}
                                            for s, (_, img) in world.services.items()]})
    for service, (uri, image) in world.services.items():
        h.add("Service Create", uri, [stack], "POST", "/api/app/v1/service/", 2 * DAY - 1, 1,
              "Success", [f"Service {service} created ({image})"], SYSTEM)
    h.add("Stack Start", stack, [], "POST", f"/api/app/v1/stack/{stack_id}/start/",
          2 * DAY - 60, 95, "Success",
          [f"Starting service {s}" for s in world.services] + ["Stack webshop is running"], admin)
    for i, (container, (uri, service, node)) in enumerate(world.containers.items()):
        image = world.services[service][1]
        h.add("Container Start", uri, [world.services[service][0], stack], "POST",
              f"/api/app/v1/container/{uri.rstrip('/').rsplit('/', 1)[1]}/start/", 2 * DAY - 65 - i,
              40, "Success", _pull_lines(image, rng)
              + [f"Creating container {container} on node {node}",
                 f"Starting container {container}", f"Container {container} is running"], SYSTEM)

    web_uri, web_image = world.services["web"]
    api_uri, _ = world.services["api"]
    worker_uri, worker_image = world.services["worker"]
    redis_uri, redis_image = world.services["redis"]

    def service_path(uri, verb):
        return f"/api/app/v1/service/{uri.rstrip('/').rsplit('/', 1)[1]}/{verb}/"

    h.add("Service Scale", web_uri, [stack], "POST", service_path(web_uri, "scale"), DAY + 3 * HOUR,
          35, "Success", ["Scaling service web from 1 to 2 containers"]
          + _replace_lines(world, "web-2")[2:] + ["Service web: 2/2 containers running"],
          PEOPLE[2], {"target_num_containers": 2})
    h.add("Service Redeploy", api_uri, [stack], "POST", service_path(api_uri, "redeploy"),
          20 * HOUR, 25, "Failed", ["Pulling image webshop/api:2.4.0",
                                    "Error: image webshop/api:2.4.0 not found: manifest unknown",
                                    "Redeploy of service api aborted: api-1, api-2 keep running"],
          PEOPLE[3])
    h.add("Service Redeploy", api_uri, [stack], "POST", service_path(api_uri, "redeploy"),
          19 * HOUR, 80, "Success", _pull_lines("webshop/api:2.4.1", rng)
          + _replace_lines(world, "api-1") + _replace_lines(world, "api-2")
          + ["Service api redeployed: 2/2 containers running"], PEOPLE[3])
    worker_1 = world.containers["worker-1"][0]
    worker_1_id = worker_1.rstrip("/").rsplit("/", 1)[1]
    h.add("Container Stop", worker_1, [worker_uri, stack], "POST",
          f"/api/app/v1/container/{worker_1_id}/stop/", 6 * HOUR, 11, "Success",
          ["Stopping container worker-1", "worker-1: received SIGTERM, draining 3 jobs",
           "Container worker-1 exited with code 0"], PEOPLE[1])
    h.add("Container Start", worker_1, [worker_uri, stack], "POST",
          f"/api/app/v1/container/{worker_1_id}/start/", 5 * HOUR, 3, "Success",
          ["Starting container worker-1", "Container worker-1 is running"], PEOPLE[1])
    h.add("Service Redeploy", worker_uri, [stack], "POST", service_path(worker_uri, "redeploy"),
          3 * HOUR, 40, "Canceled", _pull_lines(worker_image, rng)
          + ["Stopping container worker-1", "Cancel requested: leaving worker-1 on the old image",
             "Redeploy canceled"], PEOPLE[2])
    h.add("Node Upgrade Docker", world.nodes["production-2"], [cluster], "POST",
          f"/api/infra/v1/node/{_object_uuid('node/production-2')}/docker-upgrade/", 4 * 60, 0,
          "In progress", ["Upgrading Docker on production-2 from 1.13.1 to 17.03.0-ce",
                          "Draining containers from production-2", "Downloading docker-17.03.0-ce"],
          admin)
    h.add("Service Redeploy", redis_uri, [stack], "POST", service_path(redis_uri, "redeploy"),
          90, 0, "Canceling", _pull_lines(redis_image, rng)
          + ["Cancel requested: waiting for redis-1 to finish its snapshot"], PEOPLE[0])
    h.add("Service Scale", web_uri, [stack], "POST", service_path(web_uri, "scale"), 20, 0,
          "Pending", [], PEOPLE[2], {"target_num_containers": 3})
    return h.items


# ---------------------------------------------------------------------------- the live operation

def live_operations(world: World, rng):
    """Endless (fields, lines) for the simulated operation, one after the other."""
    web_uri, web_image = world.services["web"]
    worker_uri, worker_image = world.services["worker"]
    api_1 = world.containers["api-1"][0]
    api_image = world.services["api"][1]
    while True:
        yield ({"action": "Service Redeploy", "object": web_uri, "parents": [world.stack],
                "method": "POST", "is_user_action": False, "person": SYSTEM,
                "path": f"/api/app/v1/service/{web_uri.rstrip('/').rsplit('/', 1)[1]}/redeploy/"},
               ["Autoredeploy: new image pushed for " + web_image] + _pull_lines(web_image, rng)
               + _replace_lines(world, "web-1") + _replace_lines(world, "web-2")
               + ["Service web redeployed: 2/2 containers running"])
        yield ({"action": "Container Redeploy", "object": api_1,
                "parents": [world.services["api"][0], world.stack], "method": "POST",
                "person": PEOPLE[2],
                "path": f"/api/app/v1/container/{api_1.rstrip('/').rsplit('/', 1)[1]}/redeploy/"},
               _pull_lines(api_image, rng) + _replace_lines(world, "api-1")
               + ["api-1: listening on :8000", "api-1: health check passed"])
        yield ({"action": "Service Scale", "object": worker_uri, "parents": [world.stack],
                "method": "POST", "person": PEOPLE[3], "body": '{"target_num_containers": 2}',
                "path": f"/api/app/v1/service/{worker_uri.rstrip('/').rsplit('/', 1)[1]}/scale/"},
               ["Scaling service worker from 1 to 2 containers"] + _pull_lines(worker_image, rng)
               + ["Creating container worker-2 on node production-1",
                  "Starting container worker-2", "Container worker-2 is running",
                  "worker-2: connected to redis-1:6379", "Service worker: 2/2 containers running"])
        yield ({"action": "Service Scale", "object": worker_uri, "parents": [world.stack],
                "method": "POST", "person": PEOPLE[3], "body": '{"target_num_containers": 1}',
                "path": f"/api/app/v1/service/{worker_uri.rstrip('/').rsplit('/', 1)[1]}/scale/"},
               ["Scaling service worker from 2 to 1 container", "Stopping container worker-2",
                "worker-2: received SIGTERM, draining 1 job", "Container worker-2 exited with "
                "code 0", "Terminating container worker-2",
                "Service worker: 1/1 container running"])
