-- The read fold inside Redis (``fold.FOLD_MANY``): a template, whose @NAME@ marks fold.py fills.
-- ARGV: n_features, then per feature: name, spec (``fold._spec``), windowed (1|0), lo, hi.
-- Returns per key: {commit, written, a1, b1, a2, b2, ...} as integers (Redis turns a Lua number
-- into an integer reply): a = count (or values with a positive count, for a keyed kind), b =
-- scaled total (or, for a keyed kind with a reducer, its values with a positive count folded
-- with it); commit/written are -1 when absent. Integers spare the client a parse per number.
-- It first writes down the name of every field the read counts (each windowed feature's buckets
-- in the window, each lifetime feature's name) and looks fields up by name; only a field not
-- found there (a keyed value, a bucket outside the window, bookkeeping) is looked at further.
-- Writing the names costs about as much as folding a few entities: it pays for many keys only.
local find, sub, byte = string.find, string.sub, string.byte
local reducers = {}
@REDUCERS@
local nf = tonumber(ARGV[1])
local names = {}  -- field name -> {slot, where}; where 1 = count, 2 = total
local keyed_slot = {}  -- name (or name@bucket) before '#' of a keyed feature -> its slot
local reducer = {}  -- slot of a keyed feature -> function folding its values, if any
for i = 0, nf - 1 do
  local base = 2 + i * 5
  local name, spec, windowed = ARGV[base], ARGV[base + 1], ARGV[base + 2] == '1'
  local lo, hi = tonumber(ARGV[base + 3]), tonumber(ARGV[base + 4])
  local keyed = byte(spec, 1) == 35
  local heads = {}
  if keyed then
    heads[1] = {name, 0}
    reducer[i + 1] = reducers[sub(spec, 2)]
  else
    for item in string.gmatch(spec, '[^|]+') do
      heads[#heads + 1] = {name .. sub(item, 1, -2), tonumber(sub(item, -1))}
    end
  end
  for _, head in ipairs(heads) do
    local entry = {i + 1, head[2]}
    local into = names
    if keyed then into = keyed_slot; entry = i + 1 end
    if windowed then
      for b = lo + 1, hi do into[head[1] .. '@' .. b] = entry end
    else
      into[head[1]] = entry
    end
  end
end
local out = {}
for k = 1, #KEYS do
  local flat = redis.call('HGETALL', KEYS[k])
  local counts, totals, keyed = {}, {}, {}
  for i = 1, nf do counts[i] = 0; totals[i] = 0 end
  local commit, written = '', ''
  for j = 1, #flat, 2 do
    local f = flat[j]
    local e = names[f]
    if e then
      if e[2] == 1 then counts[e[1]] = counts[e[1]] + tonumber(flat[j + 1])
      else totals[e[1]] = totals[e[1]] + tonumber(flat[j + 1]) end
    elseif byte(f, 1) == 95 then
      if f == '@COMMIT@' then commit = flat[j + 1]
      elseif f == '@WRITTEN@' then written = flat[j + 1] end
    else
      local q = find(f, '#', 1, true)
      if q then
        local slot = keyed_slot[sub(f, 1, q - 1)]
        if slot then
          local d = keyed[slot]
          if not d then d = {}; keyed[slot] = d end
          local dval = sub(f, q + 1)
          d[dval] = (d[dval] or 0) + tonumber(flat[j + 1])
        end
      end
    end
  end
  local row = {tonumber(commit) or -1, tonumber(written) or -1}
  for i = 1, nf do
    local c, t = counts[i], totals[i]
    if keyed[i] then
      c = 0
      local r = reducer[i]
      for v, n in pairs(keyed[i]) do
        if n > 0 then
          c = c + 1
          if r then
            if c == 1 then t = tonumber(v) else t = r(t, tonumber(v)) end
          end
        end
      end
    end
    row[#row + 1] = c
    row[#row + 1] = t
  end
  out[k] = row
end
return out
