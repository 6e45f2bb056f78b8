// Lifeline dashboard: draws the charts from the JSON the server embedded in the page
// (<script type="application/json" id="dashboard-data">). Served from our origin; the page's
// CSP allows no inline script. Every figure is also in the page's tables; charts are a view.
/* global Chart */
(function () {
  'use strict';
  var node = document.getElementById('dashboard-data');
  if (!node || typeof Chart === 'undefined') return;
  var data = JSON.parse(node.textContent || '{}');
  var locale = data.locale || 'en-US';

  var COLORS = {
    recovered: '#0f766e',
    atStake: '#cbd5e1',
    rate: '#4f46e5',
    buckets: ['#0f766e', '#4f46e5', '#0891b2', '#d97706', '#64748b'],
  };

  Chart.defaults.font.family = 'system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';
  Chart.defaults.color = '#334155';
  Chart.defaults.animation = false;
  Chart.defaults.maintainAspectRatio = false;

  function moneyFormat(currency, digits, compact) {
    var options = { style: 'currency', currency: currency.toUpperCase(), minimumFractionDigits: digits, maximumFractionDigits: digits };
    if (compact) {
      options.notation = 'compact';
      options.minimumFractionDigits = 0;
      options.maximumFractionDigits = 1;
    }
    return new Intl.NumberFormat(locale, options);
  }

  var percent = new Intl.NumberFormat(locale, { style: 'percent', minimumFractionDigits: 1, maximumFractionDigits: 1 });

  function monthly(spec) {
    var full = moneyFormat(spec.currency, spec.digits, false);
    var compact = moneyFormat(spec.currency, spec.digits, true);
    return {
      type: 'bar',
      data: {
        labels: spec.labels,
        datasets: [
          { label: 'Recovered', data: spec.recovered, backgroundColor: COLORS.recovered, borderRadius: 3 },
          { label: 'At stake (failed − voided)', data: spec.atStake, backgroundColor: COLORS.atStake, borderRadius: 3 },
        ],
      },
      options: {
        scales: { y: { beginAtZero: true, ticks: { callback: function (v) { return compact.format(v); } } } },
        plugins: {
          legend: { position: 'bottom' },
          tooltip: { callbacks: { label: function (ctx) { return ctx.dataset.label + ': ' + full.format(ctx.parsed.y); } } },
        },
      },
    };
  }

  function rate(spec) {
    return {
      type: 'line',
      data: {
        labels: spec.labels,
        datasets: [
          {
            label: 'Recovery rate',
            data: spec.rates,
            borderColor: COLORS.rate,
            backgroundColor: COLORS.rate,
            spanGaps: true,
            tension: 0.25,
            pointRadius: 3,
          },
        ],
      },
      options: {
        scales: { y: { beginAtZero: true, suggestedMax: 1, ticks: { callback: function (v) { return percent.format(v); } } } },
        plugins: {
          legend: { display: false },
          tooltip: {
            callbacks: {
              label: function (ctx) { return ctx.parsed.y === null ? 'no cases' : 'Recovery rate: ' + percent.format(ctx.parsed.y); },
            },
          },
        },
      },
    };
  }

  function attribution(spec) {
    var full = moneyFormat(spec.currency, spec.digits, false);
    var compact = moneyFormat(spec.currency, spec.digits, true);
    return {
      type: 'bar',
      data: {
        labels: spec.labels,
        datasets: [{ label: 'Recovered', data: spec.amounts, backgroundColor: COLORS.buckets, borderRadius: 3 }],
      },
      options: {
        indexAxis: 'y',
        scales: { x: { beginAtZero: true, ticks: { callback: function (v) { return compact.format(v); } } } },
        plugins: {
          legend: { display: false },
          tooltip: {
            callbacks: {
              label: function (ctx) {
                var n = spec.counts[ctx.dataIndex];
                return full.format(ctx.parsed.x) + ' (' + n + (n === 1 ? ' case)' : ' cases)');
              },
            },
          },
        },
      },
    };
  }

  var builders = { monthly: monthly, rate: rate, attribution: attribution };
  (data.charts || []).forEach(function (spec) {
    var canvas = document.getElementById(spec.id);
    var build = builders[spec.kind];
    if (!canvas || !build) return;
    try {
      new Chart(canvas, build(spec));
      canvas.setAttribute('data-rendered', 'true');
    } catch (err) {
      canvas.setAttribute('data-rendered', 'error');
      if (window.console) console.error('chart ' + spec.id + ' failed', err);
    }
  });
})();
