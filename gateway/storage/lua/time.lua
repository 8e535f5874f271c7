-- time.lua: the clock and UTC calendar periods; prepended to every script; no KEYS or ARGV.
-- Units: epoch seconds as floats, written as "%.17g" so a double round-trips exactly.
-- Periods are computed here because with Redis TIME only the script knows the date.

local function clock(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

local function num(x) return string.format('%.17g', x) end

-- Days since 1970-01-01 -> year, month (H. Hinnant's civil_from_days).
local function civil(days)
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local y, m = yoe + era * 400, mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  return y, m, doy - math.floor((153 * mp + 2) / 5) + 1
end

-- The UTC day or month holding `now`: the key suffix naming it, and its end.
local function period(window, now)
  local day = math.floor(now / 86400)
  local y, m, d = civil(day)
  if window == 'day' then return string.format(':%04d-%02d-%02d', y, m, d), (day + 1) * 86400 end
  local suffix = string.format(':%04d-%02d', y, m)
  local ny, nm = y, m + 1
  if nm == 13 then ny, nm = y + 1, 1 end
  if nm <= 2 then ny = ny - 1 end  -- days_from_civil(ny, nm, 1)
  local era = math.floor(ny / 400)
  local yoe = ny - era * 400
  local doy = math.floor((153 * (nm > 2 and nm - 3 or nm + 9) + 2) / 5)
  local days = era * 146097 + yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy - 719468
  return suffix, days * 86400
end

