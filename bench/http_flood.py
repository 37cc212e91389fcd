"""HTTP flood against a real collector (issue 10): 1,100 idle and 1,000 slow-header connections
(the slow ones send one more header byte every second), a normal request beside them, what is
still open 25 s later, the listener's counters and how much log the flood wrote.

    python3 bench/http_flood.py target/debug/dozor-collector
"""
import socket, time, subprocess, sys, os, re, tempfile, urllib.request
tmp = tempfile.mkdtemp(prefix='dozor-flood-')
d = os.path.join(tmp, 'data'); os.makedirs(d)
logpath = os.path.join(tmp, 'collector.log')
log = open(logpath, 'wb')
p=subprocess.Popen([sys.argv[1] if len(sys.argv) > 1 else 'target/debug/dozor-collector','--http-listen','127.0.0.1:0','--mqtt-listen','127.0.0.1:0','--data-dir',d,'--security-mode','open'],stdout=subprocess.PIPE,stderr=log,env=dict(os.environ,RUST_LOG='info'))
line=p.stdout.readline().decode()
port=int(re.search(r'http=127.0.0.1:(\d+)',line).group(1))
time.sleep(1)
base=os.path.getsize(logpath)
t0=time.time(); conns=[]
for i in range(1100):
    s=socket.create_connection(('127.0.0.1',port)); conns.append(s)
for i in range(1000):
    s=socket.create_connection(('127.0.0.1',port)); s.sendall(b'GET / HTTP/1.1\r\nHost: x\r\nX-Slow: '); conns.append(s)
print('opened 2100 in %.1fs'%(time.time()-t0))
t=time.time(); r=urllib.request.urlopen('http://127.0.0.1:%d/healthz'%port,timeout=10).read(); print('healthz %.3fs'%(time.time()-t), r)
m=urllib.request.urlopen('http://127.0.0.1:%d/metrics'%port).read().decode()
print([l for l in m.splitlines() if l.startswith('dozor_http')])
# keep slow ones dribbling one byte per second for 25 s
end=time.time()+25
while time.time()<end:
    for s in conns[1100:]:
        try: s.send(b'a')
        except OSError: pass
    time.sleep(1)
alive=0
for s in conns:
    s.setblocking(False)
    try:
        b=s.recv(1)
        if b: alive+=1
    except BlockingIOError: alive+=1
    except OSError: pass
print('still open after 25 s (server side):', alive)
m=urllib.request.urlopen('http://127.0.0.1:%d/metrics'%port).read().decode()
print([l for l in m.splitlines() if l.startswith('dozor_http')])
print('log bytes during flood:', os.path.getsize(logpath)-base)
rss=[l for l in open('/proc/%d/status'%p.pid) if l.startswith('VmRSS')]; print(rss)
p.terminate(); p.wait()
