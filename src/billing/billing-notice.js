// Lifeline billing notice: include with
//   <script src="https://lifeline.example.com/embed/billing-notice.js" data-token="…" async></script>
// Options (data attributes): data-token (from POST /v1/billing-status/token, required),
// data-wall-after-days (a blocking wall once the account is this many days past due; default: never),
// data-api (the Lifeline origin; default: where this script came from).
// No cookies, no eval, no inline style attributes: a shadow root with a constructed stylesheet.
(function () {
  'use strict';
  var CONFIG = globalThis.__LIFELINE_NOTICE_CONFIG__ || { brandColor: '#4f46e5', locale: 'en-US' };
  var script = document.currentScript;
  if (!script) return;
  var token = script.getAttribute('data-token');
  if (!token) return;
  var api = script.getAttribute('data-api') || new URL(script.src).origin;
  var wallAfter = script.getAttribute('data-wall-after-days');
  var wallAfterDays = wallAfter === null || wallAfter === '' ? null : Number(wallAfter);

  function formatMoney(minor, currency) {
    var fmt = new Intl.NumberFormat(CONFIG.locale, { style: 'currency', currency: currency.toUpperCase() });
    var digits = fmt.resolvedOptions().maximumFractionDigits;
    return fmt.format(minor / Math.pow(10, digits));
  }

  function render(status) {
    if (!status || status.state === 'ok' || status.state === 'canceled' || !status.currency) return;
    var wall = wallAfterDays !== null && status.daysPastDue !== null && status.daysPastDue >= wallAfterDays;
    var host = document.createElement('div');
    host.setAttribute('data-lifeline-billing-notice', wall ? 'wall' : 'banner');
    var root = host.attachShadow({ mode: 'open' });
    var sheet = new CSSStyleSheet();
    sheet.replaceSync(
      ':host{all:initial}' +
        '.bar{position:fixed;left:0;right:0;top:0;z-index:2147483646;display:flex;gap:1rem;align-items:center;justify-content:center;padding:.75rem 1rem;font:15px/1.4 system-ui,sans-serif;color:#fff}' +
        '.wall{position:fixed;inset:0;z-index:2147483647;display:flex;flex-direction:column;gap:1rem;align-items:center;justify-content:center;padding:2rem;font:17px/1.5 system-ui,sans-serif;background:rgba(17,24,39,.92);color:#fff;text-align:center}' +
        'a.cta{display:inline-block;padding:.5rem 1rem;border-radius:.4rem;background:#fff;font-weight:600;text-decoration:none}' +
        'button{font:inherit;background:transparent;color:#fff;border:1px solid rgba(255,255,255,.7);border-radius:.4rem;padding:.3rem .7rem;cursor:pointer}' +
        'a:focus-visible,button:focus-visible{outline:3px solid #fff;outline-offset:2px}',
    );
    // the brand colour through the CSSOM (never a style attribute string)
    sheet.insertRule('.bar{background:' + CONFIG.brandColor + '}', sheet.cssRules.length);
    sheet.insertRule('a.cta{color:' + CONFIG.brandColor + '}', sheet.cssRules.length);
    root.adoptedStyleSheets = [sheet];

    var box = document.createElement('div');
    box.className = wall ? 'wall' : 'bar';
    box.setAttribute('role', wall ? 'alertdialog' : 'alert');
    if (wall) box.setAttribute('aria-modal', 'true');
    var text = document.createElement('p');
    text.className = 'message';
    var amount = formatMoney(status.amountDue, status.currency);
    text.textContent =
      status.state === 'action_required'
        ? 'Your payment of ' + amount + ' needs your confirmation.'
        : 'Your payment of ' + amount + ' failed.' + (status.daysUntilCancel !== null ? ' Update your card within ' + status.daysUntilCancel + ' days to keep your account.' : '');
    var link = document.createElement('a');
    link.className = 'cta';
    link.href = status.updateUrl || '#';
    link.rel = 'noopener';
    link.textContent = 'Update payment method';
    box.appendChild(text);
    box.appendChild(link);
    if (wall) {
      text.id = 'lifeline-billing-message';
      box.setAttribute('aria-labelledby', 'lifeline-billing-message');
    } else {
      var close = document.createElement('button');
      close.type = 'button';
      close.className = 'dismiss';
      close.setAttribute('aria-label', 'Dismiss billing notice');
      close.textContent = 'Dismiss';
      var dismiss = function () {
        host.remove();
        document.removeEventListener('keydown', onKey);
      };
      var onKey = function (event) {
        if (event.key === 'Escape') dismiss();
      };
      close.addEventListener('click', dismiss);
      document.addEventListener('keydown', onKey);
      box.appendChild(close);
    }
    root.appendChild(box);
    document.body.appendChild(host);
    if (wall) link.focus();
  }

  fetch(api + '/v1/billing-status', { headers: { authorization: 'Bearer ' + token }, credentials: 'omit', cache: 'no-store' })
    .then(function (response) {
      return response.ok ? response.json() : null;
    })
    .then(render, function () {});
})();
