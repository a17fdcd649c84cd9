"""Fair turns across keys: a pool's queue is ordered round-robin by key, not first come.

RQ's queue is one Redis list that workers take from the head (BLMOVE, which its crash recovery
relies on: `jobs.queues`), so fairness is where a job goes into that list, not how it comes out.
Each queued RQ job gets a *turn*: a key's first waiting job the current turn, its next one the
turn after its last one (waiting, or taken in the current turn). The job goes in after every job
of an earlier or equal turn. So 20 of alice's queued take turns 0..19; while a worker runs her
turn-0 job, bob's job takes the current turn (0) and runs next, not twentieth; two keys with
backlogs alternate. Batching still works: a batch leader gathers companions from the head
of the list, whoever they belong to.

The current turn (the pool's *clock*) is the latest turn a worker has taken, read from what has
left the list: a newcomer ties with the jobs of that turn still waiting and goes behind them, so
newcomers keep their order among themselves. Turns are kept in a sorted set beside the list
(all waiting jobs) and one per key (its waiting jobs); entries of jobs that have left the list
are dropped lazily: those before the head's turn by score, others when they are met (`LPOS`).
A job canceled in the current turn counts as its key's turn (the list does not say whether a job
left it for a worker or for a cancel): it costs that key one turn at most. A job pushed
by RQ itself (a retry) has no turn and keeps the place RQ gave it.

One Lua script places a job, in the transaction that enqueues it, so a job is never in the
queue at a place its turn does not give it.
"""

from __future__ import annotations

from redis.client import Pipeline

from jobs.redis_keys import lane_key, rq_queue_key, turn_clock_key, turn_count_key, turns_key

LANE_TTL_S = 7 * 24 * 3600  # a key's lane, once it has no job waiting, is only stale entries

# A job's score is its turn plus a fraction that grows with each placement, so jobs of one turn
# keep the order they came in (equal scores would sort by id, a random order for UUIDs) and every
# job before the head in the list has a lower score. The fraction wraps once every 2^20
# placements: one job in a million may go before others of its turn.
_FRACTION = 2**20

# KEYS: the queue list, all turns, the owner's lane, the clock, the placement counter; ARGV: the
# RQ job id (just pushed at the tail by RQ), the lane's TTL.
_PLACE = f"""
local queue, turns, lane, clock_key, count_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id = ARGV[1]
if redis.call('lindex', queue, -1) ~= id then return false end
redis.call('rpop', queue)
local clock = tonumber(redis.call('get', clock_key) or '0')
local head = redis.call('lindex', queue, 0)
local hs = head and redis.call('zscore', turns, head)
if not head then
  -- every job with a turn has been taken (or canceled): the clock is the latest turn among them
  local top = redis.call('zrevrange', turns, 0, 0, 'WITHSCORES')
  if #top > 0 then clock = math.max(clock, math.floor(tonumber(top[2]))) end
  redis.call('del', turns)
elseif hs then
  -- before the head in the list is what has been taken: every lower score
  local below = redis.call(
    'zrevrangebyscore', turns, '(' .. hs, '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if #below > 0 then clock = math.max(clock, math.floor(tonumber(below[2]))) end
  redis.call('zremrangebyscore', turns, '-inf', '(' .. hs)
end
-- the lane keeps the key's waiting jobs, and its last one of the current turn
redis.call('zremrangebyscore', lane, '-inf', '(' .. clock)
local last = nil
for _ = 1, 64 do
  local top = redis.call('zrevrange', lane, 0, 0, 'WITHSCORES')
  if #top == 0 then break end
  local t = math.floor(tonumber(top[2]))
  -- its latest turn: one still waiting, or one of the current turn a worker has taken
  if t <= clock or redis.call('lpos', queue, top[1]) then
    last = t
    break
  end
  redis.call('zrem', lane, top[1])
  redis.call('zrem', turns, top[1])
end
local turn = clock
if last and last + 1 > clock then turn = last + 1 end
local count = redis.call('incr', count_key) % {_FRACTION}
local score = turn + count / {_FRACTION}
redis.call('set', clock_key, clock)
redis.call('zadd', turns, score, id)
redis.call('zadd', lane, score, id)
redis.call('expire', lane, ARGV[2])
for _ = 1, 64 do
  local after = redis.call('zrangebyscore', turns, turn + 1, '+inf', 'LIMIT', 0, 1)
  if #after == 0 then break end
  if redis.call('linsert', queue, 'BEFORE', after[1], id) > 0 then return turn end
  redis.call('zrem', turns, after[1])
end
redis.call('rpush', queue, id)
return turn
"""


def take_turn(pipe: Pipeline, pool: str, owner: str, rq_job: str) -> None:
    """In the transaction that just enqueued `rq_job` at the queue's tail: move it to the place
    its key's turn gives it."""
    keys = (
        rq_queue_key(pool), turns_key(pool), lane_key(pool, owner), turn_clock_key(pool),
        turn_count_key(pool),
    )  # fmt: skip
    pipe.eval(_PLACE, len(keys), *keys, rq_job, LANE_TTL_S)
