-- POST /users/login/ with BENCH_USERNAME / BENCH_PASSWORD.
function init(args)
    wrk.method = "POST"
    wrk.path = "/users/login/"
    wrk.headers["Content-Type"] = "application/json"
    wrk.body = string.format('{"username":"%s","password":"%s"}', os.getenv("BENCH_USERNAME"), os.getenv("BENCH_PASSWORD"))
end
