// Tells the server the browser's time zone (the "tz" cookie, read by
// marketplace/timezones.py) so pages show times where the reader is; the account's own
// choice, when set, wins on the server. Pages rendered before the cookie existed say UTC.
(function () {
  "use strict";
  var zone;
  try {
    zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  } catch (e) {
    return;
  }
  if (!zone || !/^[A-Za-z0-9_+\-\/]{1,64}$/.test(zone)) {
    return;
  }
  // The pattern above keeps the value cookie-safe as it is (no encoding for the server to undo).
  var wanted = "tz=" + zone;
  if (document.cookie.split("; ").indexOf(wanted) === -1) {
    var secure = location.protocol === "https:" ? "; secure" : "";
    document.cookie = wanted + "; path=/; max-age=31536000; samesite=lax" + secure;
  }
})();
