"""The program the isolation probe runs inside a sandbox (with the sandbox's own python3).

It is data here, not code the outbox runs: `probes.py` passes it to `python3 -c` inside the
profile, with a JSON plan (what to try, what the host knows) as its argument, and reads one JSON
list of `[claim, ok, detail]` back. Standard library only, and nothing that needs the network
to prove the network is absent: every attempt must fail, and does so at once in a namespace of
its own (no route), so a working sandbox answers in well under a second.

The network attempts run only once the namespace is shown to be the sandbox's own: a sandbox
that shares the host's network fails its claims without sending anything anywhere.
"""

PROBE_SCRIPT = r'''
import ctypes, errno, json, os, socket, struct, sys

plan = json.loads(sys.argv[1])
claims = []


def claim(name, problems, good):
    claims.append([name, not problems, "; ".join(problems) if problems else good])


def status():
    return dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)


def attempt(family, address, timeout=2.0):
    """'connected', or why not: an errno name, or 'timeout'."""
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as error:
        return errno.errorcode.get(error.errno, str(error))
    try:
        sock.settimeout(timeout)
        sock.connect(address)
        return "connected"
    except socket.timeout:
        return "timeout"
    except OSError as error:
        return errno.errorcode.get(error.errno, str(error))
    finally:
        sock.close()


def identity():
    fields = status()
    problems = []
    if (os.getuid(), os.getgid()) != (65534, 65534):
        problems.append(f"runs as uid {os.getuid()} gid {os.getgid()}, not 65534")
    if int(fields["CapEff"].strip(), 16) != 0:
        problems.append(f"effective capabilities {fields['CapEff'].strip()}")
    if fields["NoNewPrivs"].strip() != "1":
        problems.append("no_new_privs is not set")
    claim("unprivileged uid, no capabilities", problems, "uid 65534, CapEff 0, NoNewPrivs 1")


def filesystem():
    problems = []
    for path in plan["read_only"]:
        try:
            with open(path, "w") as handle:
                handle.write("x")
            problems.append(f"{path} is writable")
        except OSError:
            pass
    for path in plan["writable"]:
        try:
            with open(path, "w") as handle:
                handle.write("x")
            os.unlink(path)
        except OSError as error:
            problems.append(f"{path} is not writable ({error.strerror})")
    shown = ", ".join(os.path.dirname(path) or "/" for path in plan["read_only"])
    claim("file system read-only outside scratch", problems, f"{shown} read-only; /scratch and /tmp writable")


def seccomp():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    problems = []
    if status().get("Seccomp", "").strip() != "2":
        problems.append("no seccomp filter on the process (/proc/self/status Seccomp is not 2)")
    for name, number, args, expected in plan["syscalls"]:
        ctypes.set_errno(0)
        result = libc.syscall(ctypes.c_long(number), *[ctypes.c_long(arg) for arg in args])
        got = ctypes.get_errno() if result == -1 else 0
        if got != expected:
            shown = errno.errorcode.get(got, "success") if got else f"success ({result})"
            problems.append(f"{name} returned {shown}, not {errno.errorcode[expected]}")
    names = ", ".join(sorted({name for name, *_ in plan["syscalls"]}))
    claim("seccomp filter active", problems, f"denied as expected: {names}")


def own_network():
    inside = os.readlink("/proc/self/ns/net")
    if inside == plan["host_netns"]:
        return "shares the host's network namespace"
    return None


def no_route(shared):
    if shared:
        claim("no route out except the proxy", [shared], "")
        return
    problems = []
    host = attempt(socket.AF_INET, ("127.0.0.1", plan["host_listener"]))
    if host == "connected":
        problems.append(f"reached a listener on the host's 127.0.0.1:{plan['host_listener']}")
    for family, address in ((socket.AF_INET, ("192.0.2.1", 80)), (socket.AF_INET6, ("2001:db8::1", 80))):
        outcome = attempt(family, address)
        if outcome not in ("ENETUNREACH", "EAFNOSUPPORT", "EHOSTUNREACH"):
            problems.append(f"{address[0]}:{address[1]} gave {outcome}, not 'no route'")
    detail = f"own network namespace; host loopback listener: {host}; 192.0.2.1: no route"
    claim("no route out except the proxy", problems, detail)


def dns_query():
    header = struct.pack(">HHHHHH", 0x0B0C, 0x0100, 1, 0, 0, 0)
    name = b"".join(bytes([len(part)]) + part for part in (b"outbox-probe", b"invalid")) + b"\0"
    return header + name + struct.pack(">HH", 1, 1)


def sandbox_nameservers():
    try:
        lines = open("/etc/resolv.conf").read().splitlines()
    except OSError:
        return []
    return [line.split()[1] for line in lines if line.startswith("nameserver") and len(line.split()) > 1]


def ask(server):
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM)
    except OSError:
        return None
    try:
        sock.settimeout(1.0)
        # Connected, so that a closed port's ICMP answer ends the wait at once (ECONNREFUSED).
        sock.connect((server, 53))
        sock.send(dns_query())
        return sock.recv(512)
    except OSError:
        return None
    finally:
        sock.close()


def no_dns(shared):
    if shared:
        claim("no DNS", [shared], "")
        return
    inside = sandbox_nameservers()
    servers = sorted(set(plan["nameservers"] + inside + ["127.0.0.53", "127.0.0.1", "::1"]))
    problems = [f"nameserver {server} answered" for server in servers if ask(server) is not None]
    if inside:
        problems.append(f"/etc/resolv.conf names {', '.join(inside)}")
    claim("no DNS", problems, f"no answer from {', '.join(servers)}; no resolv.conf")


def through_proxy(host, port):
    """The proxy's status line for CONNECT host:port, or why there was none."""
    proxy = plan["proxy"]
    try:
        sock = socket.create_connection((proxy[0], proxy[1]), timeout=5)
    except OSError as error:
        return f"no proxy: {error.strerror or error}"
    try:
        sock.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        return sock.recv(4096).split(b"\r\n", 1)[0].decode("latin-1")
    except OSError as error:
        return f"no answer: {error.strerror or error}"
    finally:
        sock.close()


def outbox_ports(shared):
    if shared:
        claim("the outbox's ports unreachable", [shared], "")
        return
    problems = []
    for port in plan["outbox_ports"]:
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            if attempt(family, (host, port)) == "connected":
                problems.append(f"{host}:{port} answered")
        if plan["proxy"] is not None:
            line = through_proxy("127.0.0.1", port)
            if " 200 " in f"{line} ":
                problems.append(f"the proxy connected to 127.0.0.1:{port}")
    ports = ", ".join(map(str, plan["outbox_ports"])) or "none configured"
    how = "directly and by the proxy" if plan["proxy"] is not None else "directly"
    claim("the outbox's ports unreachable", problems, f"ports {ports}: refused {how}")


def proxy_answers(shared):
    if plan["proxy"] is None:
        return
    line = "" if shared else through_proxy("outbox-probe.invalid", 443)
    problems = [shared] if shared else ([] if line.startswith("HTTP/1.1 403") else [f"got {line!r}"])
    claim("egress proxy answers", problems, f"{plan['proxy'][0]}:{plan['proxy'][1]}: {line}")


identity()
filesystem()
seccomp()
shared = own_network()
no_route(shared)
no_dns(shared)
outbox_ports(shared)
proxy_answers(shared)
print(json.dumps(claims))
'''
