-- POST /deployments/create/ with a unique name per thread and counter.
--
-- Settings come from the environment (wrk's Lua has os.getenv):
--   BENCH_CLUSTERS   comma-separated cluster ids; request i goes to cluster i mod n
--   BENCH_PREFIX     name prefix, unique per run and row
--   BENCH_RAM, BENCH_CPU, BENCH_GPU, BENCH_PRIORITY   the request (cpu in CPUs, may be fractional)
--   BENCH_PRIORITY_STEP  if set, priority = BENCH_PRIORITY + (counter * threads + thread) * step: every create
--                        outranks (nearly) all before it, so each one preempts the lowest-priority running one
--   BENCH_LIMIT      if set, each thread creates exactly this many, then sends GET /healthz until all of its
--                    creates have been answered, touches BENCH_DONE .. thread id and stops (for seeding)
--   BENCH_THREADS    wrk's -t, so that priorities interleave
local threads = {}
local next_id = 0

function setup(thread)
    thread:set("tid", next_id)
    next_id = next_id + 1
    table.insert(threads, thread)
end

local function split(text)
    local list = {}
    for item in string.gmatch(text, "[^,]+") do table.insert(list, item) end
    return list
end

function init(args)
    clusters = split(os.getenv("BENCH_CLUSTERS"))
    prefix = os.getenv("BENCH_PREFIX")
    ram = os.getenv("BENCH_RAM") or "1"
    cpu = os.getenv("BENCH_CPU") or "1"
    gpu = os.getenv("BENCH_GPU") or "0"
    priority = tonumber(os.getenv("BENCH_PRIORITY") or "0")
    step = tonumber(os.getenv("BENCH_PRIORITY_STEP") or "0")
    nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
    limit = tonumber(os.getenv("BENCH_LIMIT") or "-1")
    done_file = os.getenv("BENCH_DONE")
    sent, answered, finished = 0, 0, false
    wrk.headers["Content-Type"] = "application/json"
end

-- wrk calls request() once in thread 0's Lua state before the run, to check the request, and never sends that one;
-- `verified` makes that call consume nothing.
local verified = false

function request()
    if limit >= 0 and sent >= limit then
        return wrk.format("GET", "/healthz", nil, nil)
    end
    local p = priority
    if step ~= 0 then p = priority + (sent * nthreads + tid) * step end
    local body = string.format(
        '{"name":"%s-%d-%d","cluster_id":%s,"image_path":"registry.example.com/bench/app:1.0",' ..
        '"ram_required":%s,"cpu_required":%s,"gpu_required":%s,"priority":%d}',
        prefix, tid, sent, clusters[(sent % #clusters) + 1], ram, cpu, gpu, p)
    if verified or tid ~= 0 then sent = sent + 1 end
    verified = true
    return wrk.format("POST", "/deployments/create/", nil, body)
end

function response(status, headers, body)
    if limit < 0 or finished then return end
    if status >= 300 or string.find(body, '"cluster_id"', 1, true) then answered = answered + 1 end
    if answered >= limit then
        finished = true
        if done_file then io.open(done_file .. tid, "w"):close() end
        wrk.thread:stop()
    end
end
