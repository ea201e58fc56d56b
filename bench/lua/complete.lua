-- POST /deployments/complete/?id=N over the ids in BENCH_IDS (one per line), in file order, thread t of
-- BENCH_THREADS taking lines t, t+T, ... Run with one thread when the order matters (ids of deployments that only
-- start running once the earlier ones in the file have completed). Wraps around when the list runs out (which
-- then shows up as 409s in non-2xx).
local next_id = 0

function setup(thread)
    thread:set("tid", next_id)
    next_id = next_id + 1
end

function init(args)
    local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
    ids = {}
    local i = 0
    for line in io.lines(os.getenv("BENCH_IDS")) do
        if i % nthreads == tid then table.insert(ids, line) end
        i = i + 1
    end
    position = 0
end

-- wrk calls request() once in thread 0's Lua state before the run, to check the request, and never sends that one;
-- `verified` makes that call consume nothing.
local verified = false

function request()
    if verified or tid ~= 0 then position = position + 1 end
    verified = true
    if position > #ids then position = 1 end
    return wrk.format("POST", "/deployments/complete/?id=" .. ids[math.max(position, 1)], nil, nil)
end
