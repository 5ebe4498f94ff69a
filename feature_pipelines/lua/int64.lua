-- Signed 64-bit integers in Lua, whose numbers are doubles: a canonical integer's text taken as
-- (high, low) = (its digits but the last nine, the last nine), both exact in a double, so bounds
-- and sums are exact up to 2^63 and beyond. ``int64_check(old, inc)`` answers nil when HINCRBY
-- can add the text ``inc`` to the field text ``old`` (false: absent), else why not: 'value'
-- (``old`` is no int64 HINCRBY reads) or 'overflow' (the sum, or ``inc``, leaves int64).
-- Loaded in front of apply.lua (``store_write``), whose step 2 calls it.
local function int64_parts(s)
  if s == '0' then return 0, 0 end
  local sign, digits = string.match(s, '^(%-?)([1-9]%d*)$')
  if not digits or #digits > 19 then return nil end
  local hi, lo = tonumber(string.sub(digits, 1, -10)) or 0, tonumber(string.sub(digits, -9))
  if sign == '-' then return -hi, -lo end
  return hi, lo
end
local function int64_fits(hi, lo)  -- hi * 10^9 + lo in [-2^63, 2^63 - 1], |lo| < 2 * 10^9
  local carry = math.floor(lo / 1000000000)
  hi, lo = hi + carry, lo - carry * 1000000000
  if hi > 9223372036 or (hi == 9223372036 and lo > 854775807) then return false end
  return hi > -9223372037 or (hi == -9223372037 and lo >= 145224192)
end
local function int64_check(old, inc)
  local oh, ol = 0, 0
  if old then
    oh, ol = int64_parts(old)
    if not oh or not int64_fits(oh, ol) then return 'value' end
  end
  local ih, il = int64_parts(inc)
  if not ih or not int64_fits(ih, il) or not int64_fits(oh + ih, ol + il) then
    return 'overflow'
  end
  return nil
end
