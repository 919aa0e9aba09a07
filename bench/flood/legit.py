# bench/flood/legit.py — the legitimate side of the flood benchmark: a tiny HTTP server and a closed-loop client.
"""
    legit.py serve ADDR PORT            answers every connection with one 200 and closes
    legit.py client ADDR PORT SECONDS   new connection per request, prints {"requests": N, "rps": R}
"""
import json
import socket
import sys
import threading
import time

REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


def serve(addr, port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(1024)
    print("ready", flush=True)

    def one(c):
        try:
            c.settimeout(2)
            c.recv(4096)
            c.sendall(REPLY)
        except OSError:
            pass
        finally:
            c.close()

    while True:
        c, _ = s.accept()
        threading.Thread(target=one, args=(c,), daemon=True).start()


def client(addr, port, seconds):
    n = fails = 0
    t0 = time.monotonic()
    end = t0 + seconds
    while time.monotonic() < end:
        try:
            with socket.create_connection((addr, port), timeout=1) as c:
                c.sendall(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n")
                if c.recv(4096).startswith(b"HTTP/1.1 200"):
                    n += 1
                else:
                    fails += 1
        except OSError:
            fails += 1
    el = time.monotonic() - t0
    print(json.dumps({"requests": n, "failures": fails, "rps": n / el}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        client(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
