-- pathsplice bench: each request uploads 64 MiB (scripts/bench.sh, upload row).
-- wrk formats the request once per thread; Content-Length comes with the body.
-- PUT: the backend nginx stores it (WebDAV) and answers after the last byte.
wrk.method = "PUT"
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.body = string.rep("u", 64 * 1048576)
